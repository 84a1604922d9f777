//! The Go crawler's grpc-gateway routes, so that scripts written for the Go master keep
//! working: `POST /crawler/resource` and `DELETE /crawler/resource`, with body `{"name": …}`.
//! They are writes like any other, so followers forward them to the leader.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::resources::{checked_name, create_named};
use super::{ApiError, AppState};

/// The Go gateway's request body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResourceSpec {
    /// Resource name.
    pub name: String,
}

/// The Go gateway's answer to a create: the node the resource was assigned to.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeSpec {
    /// Node id of the assigned worker (empty while unassigned).
    pub id: String,
    /// Its address (empty while unassigned).
    #[serde(rename = "Address")]
    pub address: String,
}

/// The Go gateway's empty answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Empty {}

/// Go-compatible create: answers with the assigned node.
#[utoipa::path(post, path = "/crawler/resource", tag = "compatibility", operation_id = "go_create_resource",
    request_body = ResourceSpec,
    responses(
        (status = 200, description = "Created; the node it was assigned to", body = NodeSpec)))]
pub async fn add(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResourceSpec>,
) -> Result<Json<NodeSpec>, ApiError> {
    let (_, created) = create_named(&state, &body.name, &Default::default()).await?;
    let (id, address) = created.resource.assignment().unwrap_or(("", ""));
    Ok(Json(NodeSpec {
        id: id.to_owned(),
        address: address.to_owned(),
    }))
}

/// Go-compatible delete.
#[utoipa::path(delete, path = "/crawler/resource", tag = "compatibility", operation_id = "go_delete_resource",
    request_body = ResourceSpec,
    responses(
        (status = 200, description = "Deleted", body = Empty)))]
pub async fn remove(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResourceSpec>,
) -> Result<Json<Empty>, ApiError> {
    let name = checked_name(&body.name)?;
    state
        .leader
        .delete(name, None)
        .await
        .map_err(|e| state.write_error("resource", name, e))?;
    Ok(Json(Empty {}))
}
