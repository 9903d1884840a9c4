//! What `cairn show` ([`crate::cmd::show`]) prints: names for numbers
//! ([`flags`]), any image message as text for people ([`text`]) and the
//! views of a checkpoint ([`views`]). JSON is [`crate::json`].

pub mod flags;
pub mod text;
pub mod views;
