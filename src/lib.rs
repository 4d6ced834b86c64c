//! Kala: an inline mail gateway in front of Microsoft Exchange.
//!
//! The data path reads top to bottom: [`smtp`] receives a message, [`message`] parses it once,
//! [`checks`] emit symbols, [`verdict`] turns them into an action, and [`smtp::relay`] or
//! [`quarantine`] carries it out. [`config`] turns the TOML file into validated settings.

pub mod activity;
pub mod antivirus;
pub mod attachments;
pub mod backup;
pub mod bayes;
pub mod checks;
pub mod config;
pub mod control;
pub mod dns;
pub mod envelope;
pub mod eval;
pub mod feeds;
pub mod health;
pub mod html;
pub mod mailbox;
pub mod message;
pub mod metrics;
pub mod quarantine;
pub mod received;
pub mod rules;
pub mod ruleset;
pub mod smtp;
pub mod store;
pub mod verdict;
pub mod web;

/// Installs the process-wide TLS crypto provider (ring). Safe to call more than once.
///
/// rustls panics at the first handshake when it cannot pick a provider on its own, so the
/// binary and every test call this before anything touches TLS.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
