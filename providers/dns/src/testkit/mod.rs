//! What every provider's tests share (feature `testkit`): a small HTTP server for fake
//! provider APIs, and the conformance suite each provider runs against its fake.

pub mod conformance;
pub mod http;
