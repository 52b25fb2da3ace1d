//! `/v1/scrape/targets`: every Prometheus scrape target the tenant's `prometheus-scrape`
//! components saw in the last ten minutes — up or not, when, how long, how many samples, and why
//! the last scrape failed.

use super::AppState;
use super::auth::Caller;
use super::error::ApiResult;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use sotp_runtime::Scope;

pub async fn targets(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let targets = state.runtime.scrape_targets(&tenant).await?;
    Ok(Json(json!({ "targets": targets })))
}
