//! The REST API's credential (`rest.token`, `rest.basic`). When either is set, every
//! `/rest-api/*` request but a CORS preflight must carry `Authorization: Bearer <token>`
//! or the Basic credentials; anything else is a 401 with a JSON error. Compared in
//! constant time: a wrong guess must not tell how much of it was right.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use subtle::ConstantTimeEq;

/// The `Authorization` header values the REST API accepts.
#[derive(Clone, Debug)]
pub struct Credential {
    accepted: Vec<Vec<u8>>,
    /// The scheme a 401 asks for (`Basic` makes browsers prompt).
    challenge: &'static str,
}

impl Credential {
    /// `None` when neither a token nor Basic credentials are configured: the API is open.
    pub fn new(token: Option<&str>, basic: Option<(&str, &str)>) -> Option<Credential> {
        let mut accepted = Vec::new();
        if let Some(token) = token {
            accepted.push(format!("Bearer {token}").into_bytes());
        }
        if let Some((user, password)) = basic {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            accepted.push(format!("Basic {encoded}").into_bytes());
        }
        let challenge = if basic.is_some() { "Basic realm=\"hopcast\"" } else { "Bearer realm=\"hopcast\"" };
        (!accepted.is_empty()).then_some(Credential { accepted, challenge })
    }

    /// Does this `Authorization` header value carry an accepted credential?
    pub fn admits(&self, presented: Option<&[u8]>) -> bool {
        let Some(presented) = presented else { return false };
        // Every candidate is compared, so the time does not say which one was close.
        self.accepted.iter().fold(false, |ok, a| ok | bool::from(a.as_slice().ct_eq(presented)))
    }
}

/// Middleware for the REST routes.
pub async fn require(State(credential): State<Option<Credential>>, request: Request, next: Next) -> Response {
    let Some(credential) = credential else { return next.run(request).await };
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let presented = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if credential.admits(presented) {
        return next.run(request).await;
    }
    let error = if presented.is_some() { "Wrong credentials" } else { "This REST API requires credentials" };
    let mut response = (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "error": error }))).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static(credential.challenge));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_token_or_the_basic_pair_and_nothing_else() {
        assert!(Credential::new(None, None).is_none());
        let c = Credential::new(Some("s3cret"), Some(("admin", "pw"))).unwrap();
        assert!(c.admits(Some(b"Bearer s3cret")));
        assert!(c.admits(Some(b"Basic YWRtaW46cHc=")));
        assert!(!c.admits(Some(b"Bearer s3cre")));
        assert!(!c.admits(Some(b"Bearer s3cret ")));
        assert!(!c.admits(Some(b"Basic YWRtaW46cHc")));
        assert!(!c.admits(None));
    }
}
