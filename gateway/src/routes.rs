//! Every REST route of contract section 3, declared once. An entry says the method and path, who
//! may call it, the `api.<resource>.<verb>` subject of the worker that answers, the request and
//! answer types (from `shared::rest`) and the refusals the worker may give; both the router
//! (`rest::router`) and the OpenAPI document (`docs::document`) are made from this table, so a
//! route cannot be served undocumented or documented unserved. Adding a route is one entry.

use shared::auth::Role;
use shared::frames::SessionSnapshot;
use shared::rest::*;
use shared::subjects::api;
use std::borrow::Cow;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

pub const ROUTES: &[Route] = &[
    Route::get("get_profile", "/api/me/profile", api::PROFILE_GET)
        .describe(
            "profile",
            "The caller's profile (created by the first call)",
        )
        .answers::<Profile>(200),
    Route::put("put_profile", "/api/me/profile", api::PROFILE_PUT)
        .describe("profile", "Store the caller's profile")
        .takes::<ProfileUpdate>()
        .answers::<Profile>(200)
        .refuses(&[422]),
    Route::get(
        "get_provider_status",
        "/api/provider/status",
        api::PROVIDER_STATUS_GET,
    )
    .describe("statuses", "A provider's availability")
    .role(Role::Provider)
    .answers::<ProviderStatus>(200),
    Route::put(
        "put_provider_status",
        "/api/provider/status",
        api::PROVIDER_STATUS_PUT,
    )
    .describe("statuses", "Set a provider's availability")
    .role(Role::Provider)
    .takes::<ProviderStatusUpdate>()
    .answers::<ProviderStatus>(200)
    .refuses(&[422]),
    Route::get(
        "get_seeker_search",
        "/api/seeker/search",
        api::SEEKER_SEARCH_GET,
    )
    .describe("statuses", "A seeker's search status")
    .role(Role::Seeker)
    .answers::<SeekerSearch>(200),
    Route::put(
        "put_seeker_search",
        "/api/seeker/search",
        api::SEEKER_SEARCH_PUT,
    )
    .describe("statuses", "Set a seeker's search status")
    .role(Role::Seeker)
    .takes::<SeekerSearchUpdate>()
    .answers::<SeekerSearch>(200)
    .refuses(&[422]),
    Route::post(
        "create_work_order",
        "/api/work-orders",
        api::WORK_ORDERS_CREATE,
    )
    .describe("work orders", "A seeker asks a provider for help")
    .role(Role::Seeker)
    .takes::<NewWorkOrder>()
    .answers::<WorkOrderCreated>(201)
    .refuses(&[404, 409, 422]),
    Route::get(
        "get_work_order",
        "/api/work-orders/{work_id}",
        api::WORK_ORDERS_GET,
    )
    .describe("work orders", "A work order, for its seeker or provider")
    .id(PathId::WORK_ORDER)
    .answers::<WorkOrder>(200)
    .refuses(&[404]),
    Route::get(
        "get_session",
        "/api/sessions/{session_id}",
        api::SESSIONS_GET,
    )
    .describe("sessions", "The session's snapshot, for its participants")
    .id(PathId::SESSION)
    .answers::<SessionSnapshot>(200)
    .refuses(&[404]),
    Route::get(
        "list_messages",
        "/api/sessions/{session_id}/messages",
        api::MESSAGES_LIST,
    )
    .describe("sessions", "Chat history, newest page first")
    .id(PathId::SESSION)
    .query(&[
        QueryParameter::integer("limit", "1..200, default 50"),
        QueryParameter::integer("before", "only messages with a lower seq"),
    ])
    .answers::<MessagePage>(200)
    .refuses(&[404, 422]),
    Route::post(
        "read_up_to",
        "/api/sessions/{session_id}/read",
        api::SESSIONS_READ,
    )
    .describe(
        "sessions",
        "Mark the other parties' messages read up to a seq",
    )
    .id(PathId::SESSION)
    .takes::<ReadUpTo>()
    .answers::<ReadPosition>(200)
    .refuses(&[404, 422]),
    Route::get(
        "list_conversations",
        "/api/conversations",
        api::CONVERSATIONS_LIST,
    )
    .describe("sessions", "The caller's inbox, most recent activity first")
    .query(&[
        QueryParameter::integer("limit", "1..100, default 20"),
        QueryParameter::string("before", "next_cursor of the previous page"),
    ])
    .answers::<ConversationPage>(200)
    .refuses(&[422]),
    Route::post(
        "open_dispute",
        "/api/sessions/{session_id}/dispute",
        api::DISPUTES_OPEN,
    )
    .describe("disputes", "A party opens a dispute")
    .id(PathId::SESSION)
    .takes::<NewDispute>()
    .answers::<Dispute>(201)
    .refuses(&[404, 409, 422]),
    Route::get("list_disputes", "/api/disputes", api::DISPUTES_LIST)
        .describe("disputes", "Disputes in a state (mediators)")
        .role(Role::Mediator)
        .query(&[QueryParameter::string(
            "status",
            "open (default), joined or resolved",
        )])
        .answers::<DisputeList>(200)
        .refuses(&[422]),
    Route::get(
        "get_dispute",
        "/api/disputes/{dispute_id}",
        api::DISPUTES_GET,
    )
    .describe("disputes", "A dispute, for its parties and its mediator")
    .id(PathId::DISPUTE)
    .answers::<Dispute>(200)
    .refuses(&[404]),
    Route::post(
        "join_dispute",
        "/api/disputes/{dispute_id}/join",
        api::DISPUTES_JOIN,
    )
    .describe(
        "disputes",
        "The first mediator to join becomes a participant",
    )
    .role(Role::Mediator)
    .id(PathId::DISPUTE)
    .answers::<Dispute>(200)
    .refuses(&[404, 409]),
    Route::post(
        "resolve_dispute",
        "/api/disputes/{dispute_id}/resolve",
        api::DISPUTES_RESOLVE,
    )
    .describe("disputes", "Its mediator resolves the dispute")
    .role(Role::Mediator)
    .id(PathId::DISPUTE)
    .takes::<Resolution>()
    .answers::<Dispute>(200)
    .refuses(&[404, 409, 422]),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Put,
    Post,
}

/// One REST route: see the module documentation.
pub struct Route {
    pub operation_id: &'static str,
    pub method: Method,
    /// In axum's and OpenAPI's syntax alike (`/api/sessions/{session_id}`).
    pub path: &'static str,
    pub subject: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// The role the token must have; `None`: any role.
    pub role: Option<Role>,
    /// The resource id in the path, checked before the call travels.
    pub id: Option<PathId>,
    pub query: &'static [QueryParameter],
    pub request: Option<Body>,
    pub answer_status: u16,
    pub answer: Option<Body>,
    /// What the worker may answer besides the answer (the gateway's own refusals are added
    /// from the route's shape: 401, 429 and 503 always, 403 with a role, 400 and 415 with a body).
    pub refusals: &'static [u16],
}

/// The id in a route's path: which kind of value it is, and the resource a bad one is "not
/// found" as (a malformed id gets the same 404 as an unknown one, so ids cannot be probed).
#[derive(Clone, Copy, Debug)]
pub struct PathId {
    pub name: &'static str,
    pub kind: IdKind,
    pub resource: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    Integer,
    Uuid,
}

impl PathId {
    const WORK_ORDER: PathId = PathId {
        name: "work_id",
        kind: IdKind::Integer,
        resource: "work order",
    };
    const SESSION: PathId = PathId {
        name: "session_id",
        kind: IdKind::Uuid,
        resource: "session",
    };
    const DISPUTE: PathId = PathId {
        name: "dispute_id",
        kind: IdKind::Uuid,
        resource: "dispute",
    };

    pub fn accepts(&self, id: &str) -> bool {
        match self.kind {
            IdKind::Integer => id.parse::<i64>().is_ok(),
            IdKind::Uuid => uuid::Uuid::parse_str(id).is_ok(),
        }
    }
}

/// An optional query parameter, forwarded to the worker as it is (the worker checks it).
pub struct QueryParameter {
    pub name: &'static str,
    pub integer: bool,
    pub description: &'static str,
}

impl QueryParameter {
    const fn integer(name: &'static str, description: &'static str) -> QueryParameter {
        QueryParameter {
            name,
            integer: true,
            description,
        }
    }

    const fn string(name: &'static str, description: &'static str) -> QueryParameter {
        QueryParameter {
            name,
            integer: false,
            description,
        }
    }
}

type SchemaList = Vec<(String, RefOr<Schema>)>;

/// A request or answer type, as the document needs it: its schema's name, and how to add its
/// schema (and those it refers to) to the document's components.
#[derive(Clone, Copy)]
pub struct Body {
    pub name: fn() -> Cow<'static, str>,
    pub collect: fn(&mut SchemaList),
}

impl Body {
    const fn of<T: utoipa::ToSchema>() -> Body {
        Body {
            name: T::name,
            collect: collect::<T>,
        }
    }
}

fn collect<T: utoipa::ToSchema>(schemas: &mut SchemaList) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

impl Route {
    const fn new(
        operation_id: &'static str,
        method: Method,
        path: &'static str,
        subject: &'static str,
    ) -> Route {
        Route {
            operation_id,
            method,
            path,
            subject,
            tag: "",
            summary: "",
            role: None,
            id: None,
            query: &[],
            request: None,
            answer_status: 200,
            answer: None,
            refusals: &[],
        }
    }

    const fn get(operation_id: &'static str, path: &'static str, subject: &'static str) -> Route {
        Route::new(operation_id, Method::Get, path, subject)
    }

    const fn put(operation_id: &'static str, path: &'static str, subject: &'static str) -> Route {
        Route::new(operation_id, Method::Put, path, subject)
    }

    const fn post(operation_id: &'static str, path: &'static str, subject: &'static str) -> Route {
        Route::new(operation_id, Method::Post, path, subject)
    }

    const fn describe(mut self, tag: &'static str, summary: &'static str) -> Route {
        self.tag = tag;
        self.summary = summary;
        self
    }

    const fn role(mut self, role: Role) -> Route {
        self.role = Some(role);
        self
    }

    const fn id(mut self, id: PathId) -> Route {
        self.id = Some(id);
        self
    }

    const fn query(mut self, query: &'static [QueryParameter]) -> Route {
        self.query = query;
        self
    }

    const fn takes<T: utoipa::ToSchema>(mut self) -> Route {
        self.request = Some(Body::of::<T>());
        self
    }

    const fn answers<T: utoipa::ToSchema>(mut self, status: u16) -> Route {
        self.answer_status = status;
        self.answer = Some(Body::of::<T>());
        self
    }

    const fn refuses(mut self, refusals: &'static [u16]) -> Route {
        self.refusals = refusals;
        self
    }

    /// Reads (`.get`, `.list`) may be authenticated by the cookie from anywhere (a browser does
    /// not let a foreign page read the answer); anything that acts may not.
    pub fn reads(&self) -> bool {
        self.subject.ends_with(".get") || self.subject.ends_with(".list")
    }

    /// Every status the route may answer, its answer's first.
    pub fn statuses(&self) -> Vec<u16> {
        let mut statuses = vec![self.answer_status, 401, 429, 503];
        if self.request.is_some() {
            statuses.extend([400, 415]);
        }
        if self.role.is_some() {
            statuses.push(403);
        }
        statuses.extend(self.refusals);
        statuses
    }
}

/// What a refusal status means, as the document says it.
pub fn refusal_description(status: u16) -> &'static str {
    match status {
        400 => "the body is not JSON",
        401 => "missing, malformed, badly signed or expired token",
        403 => "the token's role does not fit",
        404 => "not found, or not yours (the same answer)",
        409 => "conflicts with the current state",
        415 => "the body is not declared `Content-Type: application/json`",
        422 => "invalid input",
        429 => "over the caller's REST rate limit; `Retry-After` says when to try again",
        503 => "the workers cannot serve the call now; `Retry-After` says when to try again",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_declared_once_with_a_typed_answer() {
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(
                seen.insert((route.method, route.path)),
                "{} declared twice",
                route.path
            );
            assert!(route.answer.is_some(), "{} has no answer type", route.path);
            assert!(!route.summary.is_empty(), "{} has no summary", route.path);
            assert_eq!(
                route.id.is_some(),
                route.path.contains('{'),
                "{}: a path id must be declared",
                route.path
            );
        }
    }
}
