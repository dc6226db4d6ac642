//! The WCS WebSocket signaling protocol: message names, payload shapes, status and
//! reason texts. Shared by the server (`signaling`) and the client (`client`), so that
//! the relay agent and the test tools speak exactly what the server understands.
//!
//! Every frame is JSON text `{"message": NAME, "data": [ARG0, ...]}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Stream status values, as the SDK's `STREAM_STATUS` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamStatus {
    New,
    Pending,
    Publishing,
    Playing,
    Paused,
    Unpublished,
    Stopped,
    Failed,
    PlaybackProblem,
}

impl std::fmt::Display for StreamStatus {
    /// As the protocol spells it (PUBLISHING, PLAYBACK_PROBLEM, ...).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        f.write_str(&text)
    }
}

impl StreamStatus {
    /// The SDK releases a stream on these: nothing follows them.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Unpublished | Self::Stopped | Self::Failed)
    }
}

/// Reason texts the SDK knows (`STREAM_STATUS_INFO`); `info` carries them verbatim.
pub mod reason {
    use crate::media::Cause;

    /// The SDK's words for why the media layer ended a peer.
    pub fn for_cause(cause: Cause) -> &'static str {
        match cause {
            Cause::IceTimeout => ICE_TIMEOUT,
            Cause::DtlsFailed => DTLS_ERROR,
            Cause::Error => FAILED_BY_ERROR,
        }
    }

    pub const STREAM_NOT_FOUND: &str = "Stream not found";
    pub const NAME_IN_USE: &str = "Stream name is already in use";
    pub const MEDIA_SESSION_ID_IN_USE: &str = "MediaSessionId is already in use";
    pub const SESSION_DOES_NOT_EXIST: &str = "Session does not exist";
    pub const ICE_TIMEOUT: &str = "Failed by ICE timeout";
    pub const DTLS_ERROR: &str = "Failed by DTLS error";
    pub const RTP_ACTIVITY: &str = "Failed by RTP activity";
    pub const SESSION_DISCONNECT: &str = "Stopped by session disconnect";
    pub const REST_TERMINATE: &str = "Stopped by rest /terminate";
    pub const PUBLISHER_STOP: &str = "Stopped by publisher stop";
    pub const USER_STOP: &str = "Stopped by user";
    pub const NO_COMMON_CODECS: &str = "No common codecs";
    pub const BAD_URI: &str = "Bad URI";
    pub const FAILED_BY_ERROR: &str = "Failed by error";
    pub const ORIGIN_CONNECT: &str = "Failed to connect to origin stream";
    /// Beyond WCS: the server is stopping (SIGTERM/SIGINT).
    pub const SERVER_SHUTDOWN: &str = "Stopped by server shutdown";
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackState {
    pub muted: bool,
}

/// A stream as the protocol shows it: the payload of `notifyStreamStatusEvent`
/// and the object REST `/stream/find*` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    pub media_session_id: String,
    pub name: String,
    pub published: bool,
    pub status: StreamStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    #[serde(default)]
    pub has_audio: bool,
    #[serde(default)]
    pub has_video: bool,
    #[serde(default)]
    pub audio_state: TrackState,
    #[serde(default)]
    pub video_state: TrackState,
    #[serde(default)]
    pub record: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_id: String,
}

impl StreamInfo {
    /// A PENDING stream for a publish (`published`) or play request of `session`.
    pub fn for_request(session: &str, req: &StreamRequest, published: bool) -> Self {
        StreamInfo {
            media_session_id: req.media_session_id.clone(),
            name: req.name.clone(),
            published,
            status: StreamStatus::Pending,
            info: None,
            has_audio: req.has_audio,
            has_video: req.has_video,
            audio_state: TrackState::default(),
            video_state: TrackState::default(),
            record: false,
            session_id: session.to_string(),
        }
    }
}

/// `publishStream` / `playStream` request: the fields the server reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRequest {
    pub media_session_id: String,
    pub name: String,
    #[serde(default)]
    pub published: bool,
    #[serde(default = "yes")]
    pub has_audio: bool,
    #[serde(default = "yes")]
    pub has_video: bool,
    #[serde(default)]
    pub sdp: String,
    #[serde(default = "webrtc")]
    pub media_provider: String,
    /// The client's own data for this stream (the SDK's `custom`), for REST hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
}

fn yes() -> bool {
    true
}
fn webrtc() -> String {
    "WebRTC".into()
}

/// `unPublishStream` / `stopStream`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRef {
    pub media_session_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub published: bool,
}

/// A `fail` warning. With `api_method == "StreamStatusEvent"` the SDK routes it to
/// stream `id` and applies `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StreamStatus>,
    pub info: String,
}

impl Fail {
    pub fn warning(info: impl Into<String>) -> Self {
        Fail { info: info.into(), ..Default::default() }
    }
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// First message after open; the object is echoed in `getUserData`.
    Connection(serde_json::Map<String, Value>),
    PublishStream(StreamRequest),
    PlayStream(StreamRequest),
    UnPublishStream(StreamRef),
    StopStream(StreamRef),
    Ping,
    Pong,
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    GetUserData(serde_json::Map<String, Value>),
    SetRemoteSdp { media_session_id: String, sdp: String },
    StreamStatus(StreamInfo),
    Fail(Fail),
    Ping,
    Pong,
}

/// Why a frame could not be understood; answered with a `fail` warning.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    NotJson(String),
    UnknownMessage(String),
    BadArguments { message: String, error: String },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotJson(e) => write!(f, "Malformed message: {e}"),
            Self::UnknownMessage(m) => write!(f, "Unknown message '{m}'"),
            Self::BadArguments { message, error } => write!(f, "Bad arguments for '{message}': {error}"),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    message: String,
    #[serde(default)]
    data: Vec<Value>,
}

fn envelope(message: &str, data: Vec<Value>) -> String {
    serde_json::json!({ "message": message, "data": data }).to_string()
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn first_arg<T: serde::de::DeserializeOwned>(env: Envelope) -> Result<T, DecodeError> {
    let arg = env.data.into_iter().next().unwrap_or(Value::Null);
    serde_json::from_value(arg).map_err(|e| DecodeError::BadArguments { message: env.message, error: e.to_string() })
}

fn parse_envelope(text: &str) -> Result<Envelope, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))
}

impl ClientMessage {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let env = parse_envelope(text)?;
        Ok(match env.message.as_str() {
            "connection" => {
                let obj: Option<serde_json::Map<String, Value>> = first_arg(env)?;
                Self::Connection(obj.unwrap_or_default())
            }
            "publishStream" => Self::PublishStream(first_arg(env)?),
            "playStream" => Self::PlayStream(first_arg(env)?),
            "unPublishStream" => Self::UnPublishStream(first_arg(env)?),
            "stopStream" => Self::StopStream(first_arg(env)?),
            "ping" => Self::Ping,
            "pong" => Self::Pong,
            _ => return Err(DecodeError::UnknownMessage(env.message)),
        })
    }

    pub fn encode(&self) -> String {
        match self {
            Self::Connection(obj) => envelope("connection", vec![Value::Object(obj.clone())]),
            Self::PublishStream(r) => envelope("publishStream", vec![to_value(r)]),
            Self::PlayStream(r) => envelope("playStream", vec![to_value(r)]),
            Self::UnPublishStream(r) => envelope("unPublishStream", vec![to_value(r)]),
            Self::StopStream(r) => envelope("stopStream", vec![to_value(r)]),
            Self::Ping => envelope("ping", vec![Value::Null]),
            Self::Pong => envelope("pong", vec![Value::Null]),
        }
    }
}

impl ServerMessage {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let env = parse_envelope(text)?;
        Ok(match env.message.as_str() {
            "getUserData" => {
                let obj: Option<serde_json::Map<String, Value>> = first_arg(env)?;
                Self::GetUserData(obj.unwrap_or_default())
            }
            "setRemoteSDP" => {
                let mut args = env.data.into_iter();
                match (args.next(), args.next()) {
                    (Some(Value::String(id)), Some(Value::String(sdp))) => {
                        Self::SetRemoteSdp { media_session_id: id, sdp }
                    }
                    _ => {
                        return Err(DecodeError::BadArguments {
                            message: env.message,
                            error: "expected [mediaSessionId, sdp]".into(),
                        })
                    }
                }
            }
            "notifyStreamStatusEvent" => Self::StreamStatus(first_arg(env)?),
            "fail" => Self::Fail(first_arg(env)?),
            "ping" => Self::Ping,
            "pong" => Self::Pong,
            _ => return Err(DecodeError::UnknownMessage(env.message)),
        })
    }

    pub fn encode(&self) -> String {
        match self {
            Self::GetUserData(obj) => envelope("getUserData", vec![Value::Object(obj.clone())]),
            Self::SetRemoteSdp { media_session_id, sdp } => {
                envelope("setRemoteSDP", vec![media_session_id.as_str().into(), sdp.as_str().into()])
            }
            Self::StreamStatus(s) => envelope("notifyStreamStatusEvent", vec![to_value(s)]),
            Self::Fail(f) => envelope("fail", vec![to_value(f)]),
            Self::Ping => envelope("ping", vec![Value::Null]),
            Self::Pong => envelope("pong", vec![Value::Null]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_sdk_publish_stream() {
        let text = r#"{"message":"publishStream","data":[{"mediaSessionId":"a-1","name":"cam","published":true,
            "hasVideo":true,"hasAudio":true,"status":"PENDING","record":false,"mediaProvider":"WebRTC",
            "sdp":"v=0","custom":{},"bitrate":0,"constraints":{"audio":true}}]}"#;
        let ClientMessage::PublishStream(r) = ClientMessage::decode(text).unwrap() else { panic!() };
        assert_eq!((r.media_session_id.as_str(), r.name.as_str(), r.sdp.as_str()), ("a-1", "cam", "v=0"));
    }

    #[test]
    fn set_remote_sdp_has_two_elements() {
        let m = ServerMessage::SetRemoteSdp { media_session_id: "x".into(), sdp: "v=0".into() };
        let v: Value = serde_json::from_str(&m.encode()).unwrap();
        assert_eq!(v["data"], serde_json::json!(["x", "v=0"]));
        assert_eq!(ServerMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn status_round_trips_with_sdk_spelling() {
        let s = StreamInfo {
            media_session_id: "m".into(),
            name: "n".into(),
            published: true,
            status: StreamStatus::Failed,
            info: Some(reason::NAME_IN_USE.into()),
            has_audio: true,
            has_video: false,
            audio_state: TrackState::default(),
            video_state: TrackState::default(),
            record: false,
            session_id: String::new(),
        };
        let text = ServerMessage::StreamStatus(s.clone()).encode();
        assert!(text.contains(r#""status":"FAILED""#) && text.contains(r#""mediaSessionId":"m""#));
        assert_eq!(ServerMessage::decode(&text).unwrap(), ServerMessage::StreamStatus(s));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(matches!(ClientMessage::decode("{"), Err(DecodeError::NotJson(_))));
        assert!(matches!(
            ClientMessage::decode(r#"{"message":"dance","data":[]}"#),
            Err(DecodeError::UnknownMessage(_))
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"message":"publishStream","data":[7]}"#),
            Err(DecodeError::BadArguments { .. })
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"message":"publishStream"}"#),
            Err(DecodeError::BadArguments { .. })
        ));
    }
}
