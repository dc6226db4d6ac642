//! A small HTTP/1.1 client for the operator's backend (REST hooks) and WHIP/WHEP: one
//! connection per request over plain TCP or rustls, a bounded answer, one deadline for
//! the whole exchange. hyper's connection API does the HTTP; no pool, because hooks come
//! at connection rate, not packet rate.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest answer body read.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Self {
        HttpClient { tls, timeout }
    }

    /// POST `body` (JSON) to `url`; `Err` says why no answer came (unreachable, TLS,
    /// timeout, a broken answer).
    pub async fn post_json(&self, url: &str, body: Vec<u8>) -> Result<Answer, String> {
        self.request(Method::POST, url, &[(header::CONTENT_TYPE, "application/json")], body).await
    }

    /// Any request: `headers` are added to Host and User-Agent; `body` may be empty.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        tokio::time::timeout(self.timeout, self.exchange(method, url, headers, body))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", self.timeout.as_millis())))
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("not an http:// or https:// URL".into()),
        };
        let host = uri.host().ok_or("no host in the URL")?.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, authority)
            .header(header::USER_AGENT, concat!("hopcast/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        if secure {
            let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| format!("TLS name: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone());
            let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            send(TokioIo::new(stream), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
    }
}

async fn send<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<Answer, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body =
            Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|e| format!("answer: {e}"))?;
        Ok(Answer { status, headers, body: body.to_bytes().to_vec() })
    }
    .await;
    driver.abort();
    result
}
