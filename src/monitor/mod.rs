//! What an operator watches: `/metrics` for Prometheus, `/health` and `/ready` for a
//! load balancer, and WCS's summary page `/?action=stat`. Everything is read from what
//! the hub, the relays and the media threads already count, at the moment it is asked
//! for: nothing here sits on the media path.

pub mod health;
pub mod metrics;
pub mod stat;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::access::credential::{self, Credential};
use crate::cluster::Cluster;
use crate::relay::RelayManager;
use crate::state::hub::Hub;

/// What the monitoring routes read.
#[derive(Clone)]
pub struct Sources {
    pub hub: Arc<Hub>,
    pub relays: Arc<RelayManager>,
    pub cluster: Option<Arc<Cluster>>,
}

/// `/health` and `/ready` are open (a load balancer has no credential); `/metrics` and
/// `/?action=stat` take the REST API's credential when one is set.
pub fn routes(sources: Sources, credential: Option<Credential>) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics::handler))
        .route_layer(axum::middleware::from_fn_with_state(credential.clone(), credential::require))
        .with_state(sources.clone());
    let open = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .with_state(sources.clone());
    guarded.merge(open)
}

/// `/?action=stat` shares its path with the web apps' index page: this layer answers it
/// before the page router sees it (behind the credential, like `/metrics`).
pub fn stat_layer(sources: Sources, credential: Option<Credential>, router: Router) -> Router {
    router.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
        let (sources, credential) = (sources.clone(), credential.clone());
        async move { stat::intercept(sources, credential, request, next).await }
    }))
}
