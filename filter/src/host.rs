//! The only place that talks to Envoy. Everything else in the filter reaches the host
//! through the small [`Host`] trait, so it unit-tests natively against an in-memory double.
//!
//! [`Envoy`] calls `proxy_wasm::hostcalls` and maps every `Status` into a [`HostError`].
//! Header and property values come back as bytes: the SDK's string getters panic on
//! non-UTF-8 values, which a client controls.

use std::fmt;
use std::time::Duration;

use proxy_wasm::types::Status;

/// A failed host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("host call {call} failed: {status}")]
pub struct HostError {
    /// Which call.
    pub call: &'static str,
    /// What the host said.
    pub status: StatusName,
}

/// A proxy-wasm `Status`, printable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StatusName(pub Status);

impl fmt::Debug for StatusName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for StatusName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl HostError {
    /// A failure of `call` with `status`.
    pub fn new(call: &'static str, status: Status) -> Self {
        Self {
            call,
            status: StatusName(status),
        }
    }
}

/// What the filter needs from Envoy. Calls act on the current (effective) context: the HTTP
/// stream inside HTTP callbacks, the root context inside root callbacks.
pub trait Host {
    // Clock, randomness, environment.

    /// Wall-clock time, nanoseconds since the Unix epoch (0 if the host cannot tell).
    fn now_nanos(&self) -> u64;
    /// Fills `buf` with random bytes.
    fn random_fill(&self, buf: &mut [u8]) -> Result<(), HostError>;
    /// An environment variable of the VM (`vm_config.environment_variables`).
    fn env_var(&self, name: &str) -> Option<String>;

    // Root context.

    /// The plugin configuration bytes.
    fn plugin_configuration(&self) -> Option<Vec<u8>>;
    /// Starts (or, with zero, stops) the root context's tick.
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError>;
    /// Defines a counter, returning its id.
    fn define_counter(&self, name: &str) -> Result<u32, HostError>;
    /// Adds `by` to a counter.
    fn increment_counter(&self, id: u32, by: u64) -> Result<(), HostError>;

    // HTTP stream.

    /// Every request header, names lowercase, in order, duplicates kept.
    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostError>;
    /// Removes every value of a request header.
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;
    /// Sets a request header, replacing any value.
    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError>;
    /// Resumes a request paused in `on_http_request_headers`.
    fn resume_request(&self) -> Result<(), HostError>;
    /// Answers the client from the gateway.
    fn send_response(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;
    /// A response header's value.
    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Sets a response header, replacing any value.
    fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError>;
    /// A stream property (`source.address`, `response.total_size`, ...).
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError>;

    // gRPC callouts.

    /// Starts a unary gRPC call; the answer arrives in `on_grpc_call_response` of the
    /// calling context.
    fn dispatch_grpc(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError>;
    /// The response message of the gRPC call being answered.
    fn grpc_response_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError>;
}

// Not in native test builds: the hostcalls are wasm imports with nothing to link against
// there, and the tests use the in-memory host instead.
#[cfg(not(test))]
pub use envoy::{Envoy, install_logging};

#[cfg(not(test))]
mod envoy {
    use std::time::{Duration, UNIX_EPOCH};

    use proxy_wasm::hostcalls;
    use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

    use super::{Host, HostError};

    /// The real host: Envoy, through `proxy_wasm::hostcalls`.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Envoy;

    impl Host for Envoy {
        fn now_nanos(&self) -> u64 {
            hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        }

        fn random_fill(&self, buf: &mut [u8]) -> Result<(), HostError> {
            // WASI `random_get`, which Envoy implements.
            getrandom::fill(buf).map_err(|_| HostError::new("random_get", Status::InternalFailure))
        }

        fn env_var(&self, name: &str) -> Option<String> {
            std::env::var(name).ok()
        }

        fn plugin_configuration(&self) -> Option<Vec<u8>> {
            hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
                .ok()
                .flatten()
        }

        fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
            hostcalls::set_tick_period(period).map_err(|s| HostError::new("set_tick_period", s))
        }

        fn define_counter(&self, name: &str) -> Result<u32, HostError> {
            hostcalls::define_metric(MetricType::Counter, name)
                .map_err(|s| HostError::new("define_metric", s))
        }

        fn increment_counter(&self, id: u32, by: u64) -> Result<(), HostError> {
            let by = i64::try_from(by).unwrap_or(i64::MAX);
            hostcalls::increment_metric(id, by).map_err(|s| HostError::new("increment_metric", s))
        }

        fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostError> {
            hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
                .map_err(|s| HostError::new("get_map(request headers)", s))
        }

        fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
            hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
                .map_err(|s| HostError::new("remove_map_value(request headers)", s))
        }

        fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
                .map_err(|s| HostError::new("set_map_value(request headers)", s))
        }

        fn resume_request(&self) -> Result<(), HostError> {
            hostcalls::resume_http_request().map_err(|s| HostError::new("resume_http_request", s))
        }

        fn send_response(
            &self,
            status: u32,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> Result<(), HostError> {
            hostcalls::send_http_response(status, headers.to_vec(), Some(body))
                .map_err(|s| HostError::new("send_http_response", s))
        }

        fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
                .map_err(|s| HostError::new("get_map_value(response headers)", s))
        }

        fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError> {
            hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value))
                .map_err(|s| HostError::new("set_map_value(response headers)", s))
        }

        fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
            hostcalls::get_property(path.to_vec()).map_err(|s| HostError::new("get_property", s))
        }

        fn dispatch_grpc(
            &self,
            cluster: &str,
            service: &str,
            method: &str,
            message: &[u8],
            timeout: Duration,
        ) -> Result<u32, HostError> {
            hostcalls::dispatch_grpc_call(
                cluster,
                service,
                method,
                Vec::new(),
                Some(message),
                timeout,
            )
            .map_err(|s| HostError::new("dispatch_grpc_call", s))
        }

        fn grpc_response_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
            hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
                .map_err(|s| HostError::new("get_buffer(grpc response)", s))
        }
    }

    /// Installs the logger and a panic hook that reports a panic at critical level before the
    /// VM traps. Every record is handed to Envoy, which filters by its `wasm` log level. (The
    /// SDK's `get_log_level` is not used: Envoy answers 6 when that logger is off, which is
    /// not a valid `LogLevel`.)
    pub fn install_logging() {
        proxy_wasm::set_log_level(LogLevel::Trace);
        std::panic::set_hook(Box::new(|info| {
            let _ = hostcalls::log(
                LogLevel::Critical,
                &format!("palisade-filter panicked, this worker's VM is now broken: {info}"),
            );
        }));
    }
}

/// Reads a property holding an integer (Envoy encodes them as 8 little-endian bytes).
pub fn decode_int_property(bytes: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn int_properties() {
        assert_eq!(decode_int_property(&1234i64.to_le_bytes()), Some(1234));
        assert_eq!(decode_int_property(b"1234"), None);
        assert_eq!(decode_int_property(&[]), None);
    }

    #[test]
    fn errors_name_the_call() {
        let e = HostError::new("dispatch_grpc_call", Status::BadArgument);
        assert_eq!(
            e.to_string(),
            "host call dispatch_grpc_call failed: BadArgument"
        );
    }
}

#[cfg(test)]
pub(crate) mod fake {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    //! An in-memory [`Host`] for unit tests: a scriptable stand-in for one Envoy worker. Clones
    //! share state, like the root and HTTP contexts of one VM share their host.

    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;
    use std::time::Duration;

    use proxy_wasm::types::Status;

    use super::{Host, HostError};

    /// A gRPC call the code under test dispatched.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct GrpcCall {
        pub token: u32,
        pub cluster: String,
        pub service: String,
        pub method: String,
        pub message: Vec<u8>,
        pub timeout: Duration,
    }

    /// A local response the code under test sent.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Sent {
        pub status: u32,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Sent {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    #[derive(Debug, Default)]
    pub struct State {
        pub now_nanos: u64,
        pub random: Option<[u8; 16]>,
        pub env: HashMap<String, String>,
        pub configuration: Option<Vec<u8>>,
        pub tick_period: Option<Duration>,
        pub counters: Vec<(String, u64)>,
        pub fail_metrics: bool,

        pub request_headers: Vec<(String, Vec<u8>)>,
        pub response_headers: Vec<(String, Vec<u8>)>,
        pub properties: HashMap<String, Vec<u8>>,
        pub resumed: u32,
        pub sent: Option<Sent>,
        pub fail_remove: bool,
        pub fail_set: bool,

        pub calls: Vec<GrpcCall>,
        pub fail_dispatch: bool,
        pub grpc_response: Option<Vec<u8>>,
    }

    #[derive(Debug, Clone, Default)]
    pub struct FakeHost(pub Rc<RefCell<State>>);

    impl FakeHost {
        pub fn new() -> Self {
            let host = Self::default();
            host.0.borrow_mut().now_nanos = 1_700_000_000_000_000_000;
            host.0.borrow_mut().random = Some([0xab; 16]);
            host
        }

        /// Forgets everything about the previous stream, as a new request on the same worker.
        pub fn new_stream(&self, headers: &[(&str, &[u8])]) {
            let mut s = self.state();
            s.request_headers = headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect();
            s.response_headers.clear();
            s.resumed = 0;
            s.sent = None;
            s.grpc_response = None;
        }

        pub fn state(&self) -> std::cell::RefMut<'_, State> {
            self.0.borrow_mut()
        }

        pub fn advance(&self, by: Duration) {
            self.state().now_nanos += u64::try_from(by.as_nanos()).unwrap();
        }

        pub fn counter(&self, name: &str) -> u64 {
            self.0
                .borrow()
                .counters
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v)
        }

        pub fn request_header(&self, name: &str) -> Option<String> {
            let s = self.0.borrow();
            let mut values = s.request_headers.iter().filter(|(n, _)| n == name);
            let v = values
                .next()
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap());
            assert!(values.next().is_none(), "{name} set more than once");
            v
        }

        pub fn response_header(&self, name: &str) -> Option<String> {
            let s = self.0.borrow();
            s.response_headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        }

        pub fn sent(&self) -> Option<Sent> {
            self.0.borrow().sent.clone()
        }

        pub fn last_call(&self) -> GrpcCall {
            self.0.borrow().calls.last().cloned().expect("no gRPC call")
        }
    }

    fn set(map: &mut Vec<(String, Vec<u8>)>, name: &str, value: &str) {
        map.retain(|(n, _)| n != name);
        map.push((name.to_owned(), value.as_bytes().to_vec()));
    }

    impl Host for FakeHost {
        fn now_nanos(&self) -> u64 {
            self.0.borrow().now_nanos
        }

        fn random_fill(&self, buf: &mut [u8]) -> Result<(), HostError> {
            match self.0.borrow().random {
                Some(bytes) => {
                    for (dst, src) in buf.iter_mut().zip(bytes.iter().cycle()) {
                        *dst = *src;
                    }
                    Ok(())
                }
                None => Err(HostError::new("random_get", Status::InternalFailure)),
            }
        }

        fn env_var(&self, name: &str) -> Option<String> {
            self.0.borrow().env.get(name).cloned()
        }

        fn plugin_configuration(&self) -> Option<Vec<u8>> {
            self.0.borrow().configuration.clone()
        }

        fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
            self.state().tick_period = Some(period);
            Ok(())
        }

        fn define_counter(&self, name: &str) -> Result<u32, HostError> {
            let mut s = self.state();
            if s.fail_metrics {
                return Err(HostError::new("define_metric", Status::InternalFailure));
            }
            if let Some(i) = s.counters.iter().position(|(n, _)| n == name) {
                return Ok(u32::try_from(i).unwrap());
            }
            s.counters.push((name.to_owned(), 0));
            Ok(u32::try_from(s.counters.len() - 1).unwrap())
        }

        fn increment_counter(&self, id: u32, by: u64) -> Result<(), HostError> {
            let mut s = self.state();
            match s.counters.get_mut(id as usize) {
                Some((_, v)) => {
                    *v += by;
                    Ok(())
                }
                None => Err(HostError::new("increment_metric", Status::NotFound)),
            }
        }

        fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostError> {
            Ok(self.0.borrow().request_headers.clone())
        }

        fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
            let mut s = self.state();
            if s.fail_remove {
                return Err(HostError::new("remove_map_value", Status::BadArgument));
            }
            s.request_headers.retain(|(n, _)| n != name);
            Ok(())
        }

        fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
            let mut s = self.state();
            if s.fail_set {
                return Err(HostError::new("set_map_value", Status::BadArgument));
            }
            set(&mut s.request_headers, name, value);
            Ok(())
        }

        fn resume_request(&self) -> Result<(), HostError> {
            self.state().resumed += 1;
            Ok(())
        }

        fn send_response(
            &self,
            status: u32,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> Result<(), HostError> {
            let mut s = self.state();
            assert!(s.sent.is_none(), "two local responses on one stream");
            s.sent = Some(Sent {
                status,
                headers: headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
                body: body.to_vec(),
            });
            Ok(())
        }

        fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
            Ok(self
                .0
                .borrow()
                .response_headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()))
        }

        fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError> {
            set(&mut self.state().response_headers, name, value);
            Ok(())
        }

        fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
            Ok(self.0.borrow().properties.get(&path.join(".")).cloned())
        }

        fn dispatch_grpc(
            &self,
            cluster: &str,
            service: &str,
            method: &str,
            message: &[u8],
            timeout: Duration,
        ) -> Result<u32, HostError> {
            let mut s = self.state();
            if s.fail_dispatch {
                return Err(HostError::new("dispatch_grpc_call", Status::BadArgument));
            }
            let token = u32::try_from(s.calls.len()).unwrap() + 100;
            s.calls.push(GrpcCall {
                token,
                cluster: cluster.to_owned(),
                service: service.to_owned(),
                method: method.to_owned(),
                message: message.to_vec(),
                timeout,
            });
            Ok(token)
        }

        fn grpc_response_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
            Ok(self.0.borrow().grpc_response.clone().map(|mut b| {
                b.truncate(size);
                b
            }))
        }
    }
}
