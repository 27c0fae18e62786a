// A use of every REST operation through a client generated from the gateway's OpenAPI document
// (generated/api.d.ts, by openapi-typescript; openapi-fetch makes the calls). It is only
// type-checked (`tsc --noEmit`): it compiles only if every path, parameter, request body and
// answer field it names is in the document with the type it is used as, and no answer is `any`.
import createClient from "openapi-fetch";
import type { paths } from "./generated/api";

/** Refuses a value typed `any` (an untyped answer would type-check anything). */
type IsAny<T> = 0 extends 1 & T ? true : false;
function typed<T>(value: IsAny<T> extends true ? never : T): T {
  return value;
}

const client = createClient<paths>({
  baseUrl: "http://127.0.0.1:8080",
  headers: { Authorization: "Bearer <token>" },
});

export async function everyOperation(sessionId: string, disputeId: string, workId: number) {
  const session_id = sessionId;
  const dispute_id = disputeId;
  const work_id = workId;

  const profile = await client.GET("/api/me/profile");
  const name: string | null | undefined = typed(profile.data)?.name;
  const refusal: string | undefined = typed(profile.error)?.error;
  const stored = await client.PUT("/api/me/profile", {
    body: { name: "Asha", mobile: "9876543210", profile_pic: null },
  });
  const mobile: string | null | undefined = typed(stored.data)?.mobile;

  const status = await client.GET("/api/provider/status");
  const active: boolean | undefined = typed(status.data)?.is_active;
  await client.PUT("/api/provider/status", {
    body: { is_active: true, latitude: 28.7, longitude: 77.1 },
  });
  const search = await client.GET("/api/seeker/search");
  const searching: boolean | undefined = typed(search.data)?.is_searching;
  await client.PUT("/api/seeker/search", { body: { is_searching: false } });

  const created = await client.POST("/api/work-orders", {
    body: {
      provider_id: "provider-1",
      service_type: "Plumbing",
      message: "Leaking tap",
      latitude: 28.7,
      longitude: 77.1,
    },
  });
  const newWorkId: number | undefined = typed(created.data)?.work_id;
  const order = await client.GET("/api/work-orders/{work_id}", {
    params: { path: { work_id } },
  });
  const orderSession: string | null | undefined = typed(order.data)?.session_id;

  const snapshot = await client.GET("/api/sessions/{session_id}", {
    params: { path: { session_id } },
  });
  const distance: number | null | undefined = typed(snapshot.data)?.distance_meters;
  const seekerOnline: boolean | undefined = snapshot.data?.presence.seeker;
  const history = await client.GET("/api/sessions/{session_id}/messages", {
    params: { path: { session_id }, query: { limit: 50, before: 10 } },
  });
  const firstSeq: number | undefined = typed(history.data)?.messages[0]?.seq;
  const kind: "text" | "location" | "image" | "file" | "system" | undefined =
    history.data?.messages[0]?.kind;
  const read = await client.POST("/api/sessions/{session_id}/read", {
    params: { path: { session_id } },
    body: { up_to_seq: 3 },
  });
  const unread: number | undefined = typed(read.data)?.unread_count;
  const inbox = await client.GET("/api/conversations", {
    params: { query: { limit: 20, before: "cursor" } },
  });
  const nextCursor: string | null | undefined = typed(inbox.data)?.next_cursor;
  const myRole: "seeker" | "provider" | "mediator" | undefined =
    inbox.data?.conversations[0]?.my_role;

  const opened = await client.POST("/api/sessions/{session_id}/dispute", {
    params: { path: { session_id } },
    body: { reason: "The work was not done" },
  });
  const openedBy: string | undefined = typed(opened.data)?.opened_by;
  const disputes = await client.GET("/api/disputes", { params: { query: { status: "open" } } });
  const listed: number | undefined = typed(disputes.data)?.disputes.length;
  const dispute = await client.GET("/api/disputes/{dispute_id}", {
    params: { path: { dispute_id } },
  });
  const joinedYet: boolean | undefined = typed(dispute.data)?.mediator_joined;
  const joined = await client.POST("/api/disputes/{dispute_id}/join", {
    params: { path: { dispute_id } },
  });
  const joinedStatus: string | undefined = typed(joined.data)?.status;
  const resolved = await client.POST("/api/disputes/{dispute_id}/resolve", {
    params: { path: { dispute_id } },
    body: { resolution: "Refunded" },
  });
  const resolution: string | null | undefined = typed(resolved.data)?.resolution;

  const health = await client.GET("/health");
  const nats: string | undefined = typed(health.data)?.nats;
  const sockets = await client.GET("/api/websocket/stats");
  const seekers: number | undefined = typed(sockets.data)?.by_role.seeker;
  const metrics = await client.GET("/metrics", { parseAs: "text" });
  const text: string | undefined = metrics.data;

  return [
    name, refusal, mobile, active, searching, newWorkId, orderSession, distance, seekerOnline,
    firstSeq, kind, unread, nextCursor, myRole, openedBy, listed, joinedYet, joinedStatus,
    resolution, nats, seekers, text,
  ];
}
