//! The API documents the gateway serves at `/docs/` (contract section 11): the OpenAPI 3.1 document
//! of every REST route, generated from the route handlers' annotations (`rest.rs`, utoipa), and the
//! AsyncAPI 3.0 document of the WebSocket protocols and NATS subjects (`docs/asyncapi.yaml`).

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Marketplace REST API",
        description = "Every REST route of the gateway (contract section 3). Errors are {\"error\": \"...\"} with a 4xx status.",
        version = "1"
    ),
    paths(
        crate::rest::get_profile, crate::rest::put_profile,
        crate::rest::get_provider_status, crate::rest::put_provider_status,
        crate::rest::get_seeker_search, crate::rest::put_seeker_search,
        crate::rest::create_work_order, crate::rest::get_work_order,
        crate::rest::get_session, crate::rest::list_messages, crate::rest::read_up_to,
        crate::rest::list_conversations,
        crate::rest::open_dispute, crate::rest::list_disputes, crate::rest::get_dispute,
        crate::rest::join_dispute, crate::rest::resolve_dispute,
        crate::stats::health, crate::stats::websocket_stats,
    ),
    components(schemas(crate::stats::Health, crate::stats::SocketStats, crate::stats::SocketsByRole, ErrorBody, ProfileBody, ProviderStatusBody, SeekerSearchBody, WorkOrderBody, ReadBody, DisputeBody, ResolutionBody)),
    modifiers(&BearerToken)
)]
pub struct ApiDocument;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `{"error": "..."}`, every refusal's body.
#[derive(ToSchema, Deserialize)]
#[allow(dead_code)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(ToSchema, Deserialize)]
#[allow(dead_code)]
pub struct ProfileBody {
    pub name: Option<String>,
    /// Exactly 10 digits.
    pub mobile: String,
    pub profile_pic: Option<String>,
}

#[derive(ToSchema, Deserialize)]
#[allow(dead_code)]
pub struct ProviderStatusBody {
    pub is_active: bool,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(ToSchema, Deserialize)]
#[allow(dead_code)]
pub struct SeekerSearchBody {
    pub is_searching: bool,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(ToSchema, Deserialize)]
#[allow(dead_code)]
pub struct WorkOrderBody {
    pub provider_id: String,
    pub service_type: String,
    pub message: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(ToSchema, Deserialize)]
#[allow(dead_code)]
pub struct ReadBody {
    pub up_to_seq: i64,
}

#[derive(ToSchema, Deserialize)]
#[allow(dead_code)]
pub struct DisputeBody {
    /// 1 to 1000 characters.
    pub reason: String,
}

#[derive(ToSchema, Deserialize)]
#[allow(dead_code)]
pub struct ResolutionBody {
    /// 1 to 1000 characters.
    pub resolution: String,
}

const ASYNCAPI: &str = include_str!("../../docs/asyncapi.yaml");

pub async fn openapi_json() -> Response {
    match ApiDocument::openapi().to_pretty_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            error.to_string(),
        )
            .into_response(),
    }
}

pub async fn asyncapi_yaml() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], ASYNCAPI).into_response()
}

pub async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Marketplace API documents</title></head>\
         <body><h1>Marketplace API documents</h1><ul>\
         <li><a href=\"openapi.json\">openapi.json</a>: every REST route (OpenAPI 3.1, generated from the gateway's code)</li>\
         <li><a href=\"asyncapi.yaml\">asyncapi.yaml</a>: the native WebSocket protocol, the neighbouring systems' dialects and the NATS subjects (AsyncAPI 3.0)</li>\
         </ul></body></html>",
    )
}
