//! The client side of WHIP and WHEP, for relays, tests and the load generator: the offer
//! our media engine makes goes out in one POST, the answer is applied, and a DELETE of
//! the resource ends it. Media flows through a peer of the caller's [`MediaHandle`], as
//! with the WCS protocol client.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method};

use super::SDP;
use crate::media::{MediaError, MediaHandle, PeerId, Role};
use crate::net::http_client::HttpClient;

/// How long a WHIP/WHEP server may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub enum WhipError {
    /// No HTTP answer (refused, TLS, timeout).
    Unreachable(String),
    /// The server answered with this status and error text.
    Refused(u16, String),
    /// The answer could not be used (no Location, not SDP).
    BadAnswer(String),
    Media(MediaError),
}

impl std::fmt::Display for WhipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "cannot reach the server: {e}"),
            Self::Refused(status, text) => write!(f, "refused with HTTP {status}: {text}"),
            Self::BadAnswer(e) => write!(f, "unusable answer: {e}"),
            Self::Media(e) => write!(f, "media: {e}"),
        }
    }
}

/// A WHIP (publish) or WHEP (play) session on a remote server.
#[derive(Clone)]
pub struct WhipSession {
    http: HttpClient,
    /// The resource's absolute URL (from `Location`).
    pub resource: String,
    token: Option<String>,
    pub peer: PeerId,
}

/// Publish stream `key` of `media` to the WHIP endpoint `url` (its media leaves from a
/// new peer `peer`).
pub async fn publish(
    media: &MediaHandle,
    url: &str,
    token: Option<&str>,
    tls: Arc<rustls::ClientConfig>,
    peer: PeerId,
    key: u64,
) -> Result<WhipSession, WhipError> {
    open(media, url, token, tls, peer, Role::Consumer(key)).await
}

/// Play from the WHEP endpoint `url` into stream `key` of `media` (fed by a new peer).
pub async fn play(
    media: &MediaHandle,
    url: &str,
    token: Option<&str>,
    tls: Arc<rustls::ClientConfig>,
    peer: PeerId,
    key: u64,
) -> Result<WhipSession, WhipError> {
    open(media, url, token, tls, peer, Role::Producer(key)).await
}

async fn open(
    media: &MediaHandle,
    url: &str,
    token: Option<&str>,
    tls: Arc<rustls::ClientConfig>,
    peer: PeerId,
    role: Role,
) -> Result<WhipSession, WhipError> {
    let http = HttpClient::new(tls, ANSWER_TIMEOUT);
    let offer = media.offer(peer, role).await.map_err(WhipError::Media)?;
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![(header::CONTENT_TYPE, SDP)];
    if let Some(b) = &bearer {
        headers.push((header::AUTHORIZATION, b.as_str()));
    }
    let result = async {
        let answer =
            http.request(Method::POST, url, &headers, offer.into_bytes()).await.map_err(WhipError::Unreachable)?;
        if answer.status != 201 {
            let text = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).chars().take(200).collect());
            return Err(WhipError::Refused(answer.status, text));
        }
        let location = answer.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
        let location = location.ok_or_else(|| WhipError::BadAnswer("no Location header".into()))?;
        let resource = resolve(url, location);
        let sdp = String::from_utf8(answer.body).map_err(|_| WhipError::BadAnswer("the answer is not UTF-8".into()))?;
        media.apply_answer(peer, sdp).await.map_err(WhipError::Media)?;
        Ok(resource)
    }
    .await;
    match result {
        Ok(resource) => Ok(WhipSession { http, resource, token: token.map(String::from), peer }),
        Err(e) => {
            media.remove_peer(peer, false);
            Err(e)
        }
    }
}

/// The endpoint for stream `name`: `url` with `/name` appended when it ends in `/whip`
/// or `/whep` (a server's base), else `url` as it is (a full endpoint, e.g. with a query).
pub fn endpoint(url: &str, name: &str) -> String {
    let base = url.trim_end_matches('/');
    if base.ends_with("/whip") || base.ends_with("/whep") {
        format!("{base}/{name}")
    } else {
        base.to_string()
    }
}

/// `location` (absolute, or a path) against the endpoint URL it came from.
fn resolve(url: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let origin_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    if location.starts_with('/') {
        return format!("{}{location}", &url[..origin_end]);
    }
    let dir_end = url.rfind('/').filter(|i| *i >= origin_end).map_or(url.len(), |i| i + 1);
    format!("{}{}{location}", &url[..dir_end], if dir_end == url.len() { "/" } else { "" })
}

impl WhipSession {
    /// End the session on the server (`DELETE`); returns the HTTP status.
    pub async fn delete(&self) -> Result<u16, WhipError> {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<_> = bearer.iter().map(|b| (header::AUTHORIZATION, b.as_str())).collect();
        let answer = self
            .http
            .request(Method::DELETE, &self.resource, &headers, Vec::new())
            .await
            .map_err(WhipError::Unreachable)?;
        Ok(answer.status)
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn locations_resolve_against_the_endpoint() {
        let url = "http://h:8081/whip/cam";
        assert_eq!(resolve(url, "/whip/resource/1"), "http://h:8081/whip/resource/1");
        assert_eq!(resolve(url, "https://o/x"), "https://o/x");
        assert_eq!(resolve(url, "resource/1"), "http://h:8081/whip/resource/1");
        assert_eq!(resolve("http://h", "/r"), "http://h/r");
    }

    #[test]
    fn endpoints_take_the_name_after_a_base() {
        assert_eq!(super::endpoint("http://h/whip/", "cam"), "http://h/whip/cam");
        assert_eq!(super::endpoint("http://h/whep", "cam"), "http://h/whep/cam");
        assert_eq!(super::endpoint("http://h/rtc/v1/whip/?stream=x", "cam"), "http://h/rtc/v1/whip/?stream=x");
    }
}
