//! The API documents the gateway serves at `/docs/` (contract section 11): the OpenAPI 3.1 document
//! of every HTTP route, generated from the REST table (`routes.rs`) and the types of `shared::rest`
//! (utoipa), and the
//! AsyncAPI 3.0 document of the WebSocket protocols and NATS subjects (`docs/asyncapi.yaml`).

use crate::routes::{Body, IdKind, Method, ROUTES, Route, refusal_description};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use shared::rest::ErrorBody;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Marketplace REST API",
        description = "Every HTTP route of the gateway (contract section 3). Errors are {\"error\": \"...\"} with a 4xx or 5xx status.",
        version = "1"
    ),
    paths(crate::stats::health, crate::stats::websocket_stats, crate::stats::metrics),
    components(schemas(crate::stats::Health, crate::stats::SocketStats, crate::stats::SocketsByRole, ErrorBody)),
    modifiers(&BearerToken)
)]
struct OperatorRoutes;

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

/// The OpenAPI document: the operators' routes (annotated in `stats.rs`) and every route of the
/// REST table, with the schemas of their bodies.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = OperatorRoutes::openapi();
    let mut schemas = Vec::new();
    for route in ROUTES {
        let method = match route.method {
            Method::Get => HttpMethod::Get,
            Method::Put => HttpMethod::Put,
            Method::Post => HttpMethod::Post,
        };
        document
            .paths
            .add_path_operation(route.path, vec![method], operation(route, &mut schemas));
    }
    let components = document.components.get_or_insert_with(Default::default);
    components.schemas.extend(schemas);
    document
}

/// One route's operation: its parameters, body, answer and every refusal.
fn operation(route: &Route, schemas: &mut Vec<(String, RefOr<Schema>)>) -> Operation {
    let reference = |body: &Body, schemas: &mut Vec<(String, RefOr<Schema>)>| {
        (body.collect)(schemas);
        Ref::from_schema_name((body.name)())
    };
    let mut operation = OperationBuilder::new()
        .operation_id(Some(route.operation_id))
        .tag(route.tag)
        .summary(Some(route.summary))
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    if let Some(id) = &route.id {
        let schema = match id.kind {
            IdKind::Integer => ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
            IdKind::Uuid => ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        };
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(id.name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(format!("a {} id", id.resource)))
                .schema(Some(schema)),
        );
    }
    for parameter in route.query {
        let schema_type = if parameter.integer {
            Type::Integer
        } else {
            Type::String
        };
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(parameter.name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(parameter.description))
                .schema(Some(ObjectBuilder::new().schema_type(schema_type))),
        );
    }
    if let Some(request) = &route.request {
        operation = operation.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(reference(request, schemas)))
                        .build(),
                )
                .build(),
        ));
    }
    for status in route.statuses() {
        let (description, body) = if status == route.answer_status {
            (
                "the answer",
                route
                    .answer
                    .as_ref()
                    .map(|answer| reference(answer, schemas)),
            )
        } else {
            (
                refusal_description(status),
                Some(Ref::from_schema_name("ErrorBody")),
            )
        };
        let mut response = ResponseBuilder::new().description(description);
        if let Some(body) = body {
            response = response.content(
                "application/json",
                ContentBuilder::new().schema(Some(body)).build(),
            );
        }
        operation = operation.response(status.to_string(), response.build());
    }
    operation.build()
}

const ASYNCAPI: &str = include_str!("../../docs/asyncapi.yaml");

pub async fn openapi_json() -> Response {
    match document().to_pretty_json() {
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
