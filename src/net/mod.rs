//! What llorchd processes need to talk to each other safely: bearer-token
//! auth (`auth`), TLS from PEM files with optional mTLS (`tls`), a pure-Rust
//! resolver (`dns`, because a static binary has no NSS), the HTTP client
//! (`client`) and the accept loop that serves a router over HTTP or TLS
//! (`server`). No routes and no wire types live here.

pub mod auth;
pub mod client;
pub mod dns;
pub mod server;
pub mod tls;

#[cfg(test)]
mod tests;
