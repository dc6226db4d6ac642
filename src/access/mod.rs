//! Who may do what. WCS's REST hooks ask the operator's backend about every connection
//! and stream and tell it what happened ([`hooks`]); the REST API takes a credential
//! when one is configured ([`credential`]); relays dial only the targets `relay.allow`
//! permits ([`targets`]). Ownership needs no module: a session can only stop its own
//! streams (`Hub::stop`), and only REST acts on others'.

pub mod credential;
pub mod hooks;
pub mod targets;
