//! Flight session options (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`).
//!
//! arrow-flight 59 does not generate these messages, so they are declared here with
//! prost, field for field as in Arrow's `Flight.proto`. Options map onto the session's
//! `SET` settings; `schema` changes the default schema.

use std::collections::HashMap;

use prost::Message;
use quarry_common::QuarryError;

use crate::service::{QueryService, SessionHandle};

pub(super) const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
pub(super) const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
pub(super) const CLOSE_SESSION: &str = "CloseSession";

#[derive(Clone, PartialEq, Message)]
pub(super) struct SessionOptionValue {
    #[prost(oneof = "session_option_value::OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<session_option_value::OptionValue>,
}

pub(super) mod session_option_value {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct StringListValue {
        #[prost(string, repeated, tag = "1")]
        pub values: Vec<String>,
    }

    // Variant names follow Flight.proto.
    #[allow(clippy::enum_variant_names)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum OptionValue {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(sfixed64, tag = "3")]
        Int64Value(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        StringListValue(StringListValue),
    }
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetSessionOptionsError>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct SetSessionOptionsError {
    /// 0 unspecified, 1 invalid name, 2 invalid value, 3 error.
    #[prost(int32, tag = "1")]
    pub value: i32,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct CloseSessionResult {
    /// 1 closed.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

const INVALID_NAME: i32 = 1;
const INVALID_VALUE: i32 = 2;

fn to_text(value: &SessionOptionValue) -> Option<String> {
    use session_option_value::OptionValue;
    Some(match value.option_value.as_ref()? {
        OptionValue::StringValue(s) => s.clone(),
        OptionValue::BoolValue(b) => b.to_string(),
        OptionValue::Int64Value(i) => i.to_string(),
        OptionValue::DoubleValue(d) => d.to_string(),
        OptionValue::StringListValue(l) => l.values.join(","),
    })
}

fn string_value(s: String) -> SessionOptionValue {
    SessionOptionValue {
        option_value: Some(session_option_value::OptionValue::StringValue(s)),
    }
}

pub(super) fn set_options(
    service: &dyn QueryService,
    session: &SessionHandle,
    body: &[u8],
) -> Result<Vec<u8>, QuarryError> {
    let request = SetSessionOptionsRequest::decode(body)
        .map_err(|e| QuarryError::invalid(format!("malformed SetSessionOptionsRequest: {e}")))?;
    let mut errors = HashMap::new();
    for (name, value) in request.session_options {
        let Some(text) = to_text(&value) else {
            // An empty value removes the option.
            service.reset_option(session, &name);
            continue;
        };
        let outcome = if name.eq_ignore_ascii_case("schema") {
            service
                .use_schema(session, &text)
                .map_err(|_| INVALID_VALUE)
        } else {
            if service.knows_option(&name) {
                service
                    .set_option(session, &name, &text)
                    .map_err(|_| INVALID_VALUE)
            } else {
                Err(INVALID_NAME)
            }
        };
        if let Err(value) = outcome {
            errors.insert(name, SetSessionOptionsError { value });
        }
    }
    Ok(SetSessionOptionsResult { errors }.encode_to_vec())
}

pub(super) fn get_options(service: &dyn QueryService, session: &SessionHandle) -> Vec<u8> {
    let mut session_options: HashMap<String, SessionOptionValue> = service
        .settings(session)
        .into_iter()
        .map(|(k, v)| (k, string_value(v)))
        .collect();
    session_options.insert(
        "schema".to_string(),
        string_value(service.default_schema(session)),
    );
    GetSessionOptionsResult { session_options }.encode_to_vec()
}

pub(super) fn closed() -> Vec<u8> {
    CloseSessionResult { status: 1 }.encode_to_vec()
}
