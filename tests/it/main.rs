//! kurz's integration tests, one binary (it links once): each module an area, all on the
//! shared [`harness`]. Tests talk to real servers the harness starts on free ports.

mod analytics;
mod api;
mod disk;
mod durability;
mod dynamodb;
mod harness;
mod idempotency;
mod infra;
mod keys;
mod lifetime;
mod lookups;
mod lost_answers;
mod manage;
mod monitoring;
mod openapi;
mod overload;
mod pages;
mod redis;
mod regions;
mod security;
mod stream;
mod traces;
mod transfer;
