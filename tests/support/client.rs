//! A WebSocket client as a phone app would be: connect with a token, `send` frames, `expect` the
//! next frame of a type. Frames of other types that arrive meanwhile are kept, so a later `expect`
//! still finds them (periodic ticks do not make tests flaky).

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use shared::auth::Role;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    /// The close frame's code, once the server closed the socket.
    pub closed_with: Option<u16>,
}

/// What the server answered to an upgrade it refused.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
}

pub fn endpoint(role: Role) -> &'static str {
    match role {
        Role::Seeker => "/ws/work/seeker/",
        Role::Provider => "/ws/work/provider/",
        Role::Mediator => "/ws/work/mediator/",
    }
}

impl Client {
    pub async fn connect(gateway: &str, role: Role, token: &str) -> Result<Client, Refused> {
        let url = format!("ws://{gateway}{}?token={token}", endpoint(role));
        Client::connect_url(&url, None).await
    }

    /// Connects to `url`, optionally with an `Authorization` header.
    pub async fn connect_url(url: &str, authorization: Option<&str>) -> Result<Client, Refused> {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        Client::connect_url_with_headers(url, &headers).await
    }

    /// [`Client::connect_url`] for a task of its own (the URL moved in).
    pub async fn connect_url_owned(url: String) -> Result<Client, Refused> {
        Client::connect_url(&url, None).await
    }

    /// Connects to `url` sending `cookie` (a browser's `Cookie` header).
    pub async fn connect_url_with_cookie(url: &str, cookie: &str) -> Result<Client, Refused> {
        Client::connect_url_with_headers(url, &[("cookie", cookie)]).await
    }

    pub async fn connect_url_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, Refused> {
        let mut request = url.into_client_request().expect("valid URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                value.parse().expect("header value"),
            );
        }
        // Small read buffers, as a phone's: the default 128 KiB is zeroed again and again, which
        // costs the benchmarks' load client more CPU than the frames themselves.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096);
        match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
            Ok((socket, _)) => Ok(Client {
                socket,
                pending: VecDeque::new(),
                closed_with: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
            }),
            Err(error) => panic!("cannot connect to {url}: {error}"),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::text(text))
            .await
            .expect("socket accepts the frame");
    }

    /// Sends a text frame; false when the socket is closed (a load generator's way to notice).
    pub async fn try_send(&mut self, text: &str) -> bool {
        self.socket.send(Message::text(text)).await.is_ok()
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.socket
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("socket accepts the frame");
    }

    /// The next frame from the server, or None when the socket closed or `wait` passed.
    async fn next_frame(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("server frames are JSON"));
                }
                Ok(Message::Close(frame)) => {
                    self.closed_with = Some(frame.map_or(1005, |frame| u16::from(frame.code)));
                    return None;
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Waits for the next frame of `frame_type` (earlier frames of other types stay queued).
    #[track_caller]
    pub fn expect(&mut self, frame_type: &str) -> impl std::future::Future<Output = Value> + '_ {
        let caller = std::panic::Location::caller();
        let frame_type = frame_type.to_owned();
        async move {
            match self.find(&frame_type, WAIT).await {
                Some(frame) => frame,
                None => panic!(
                    "{caller}: no `{frame_type}` frame arrived (closed: {:?}; other frames: {:?})",
                    self.closed_with, self.pending
                ),
            }
        }
    }

    /// The next frame of `frame_type` within `wait`, if any.
    pub async fn find(&mut self, frame_type: &str, wait: Duration) -> Option<Value> {
        self.find_any(&[frame_type], wait).await
    }

    /// The next frame of any of `frame_types` within `wait`, if any.
    pub async fn find_any(&mut self, frame_types: &[&str], wait: Duration) -> Option<Value> {
        let wanted = |frame: &Value| frame_types.iter().any(|kind| frame["type"] == *kind);
        if let Some(index) = self.pending.iter().position(wanted) {
            return self.pending.remove(index);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next_frame(remaining).await?;
            if wanted(&frame) {
                return Some(frame);
            }
            self.pending.push_back(frame);
        }
    }

    /// Asserts that no frame of `frame_type` arrives within `wait`.
    #[track_caller]
    pub fn expect_no(
        &mut self,
        frame_type: &str,
        wait: Duration,
    ) -> impl std::future::Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        let frame_type = frame_type.to_owned();
        async move {
            if let Some(frame) = self.find(&frame_type, wait).await {
                panic!("{caller}: unexpected `{frame_type}` frame: {frame}");
            }
        }
    }

    /// Expects an error frame and returns its text.
    pub async fn expect_error(&mut self) -> String {
        let frame = self.expect("error").await;
        frame["error"].as_str().expect("error text").to_owned()
    }

    /// Waits until the server closes the socket and returns the close code.
    pub async fn expect_closed(&mut self) -> u16 {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.closed_with.is_none() {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(remaining).await {
                Some(frame) => self.pending.push_back(frame),
                None => break,
            }
        }
        self.closed_with.expect("the server closed the socket")
    }

    /// Sends a ping frame and waits for the pong: proof the socket is still usable.
    pub async fn assert_usable(&mut self) {
        self.send(serde_json::json!({"type": "ping"})).await;
        self.expect("pong").await;
    }

    /// Frames received but not yet expected.
    pub fn unclaimed(&self) -> &VecDeque<Value> {
        &self.pending
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

impl Client {
    /// The underlying socket, for load generators that split reading and writing.
    pub fn into_socket(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.socket
    }
}

impl Client {
    /// Reads until the server closes or drops the socket; true if that happens within `wait`.
    pub async fn disconnected_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.closed_with = Some(frame.map_or(1005, |frame| u16::from(frame.code)));
                    return true;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}
