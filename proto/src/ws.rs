//! WebSocket frames. A client sends [`ClientOp`]s; the server sends event
//! envelopes as they are, and control frames tagged by `op`.

use crate::api::ErrorDetail;
use crate::event::{Envelope, Topic};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientOp {
    /// Replay every stored event with `seq > since` on these topics, then go live.
    Subscribe {
        topics: Vec<String>,
        #[serde(default)]
        since: u64,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    Ping {
        #[serde(default)]
        nonce: Option<u64>,
    },
}

/// What a subscription matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicFilter {
    All,
    Topic(Topic),
}

impl TopicFilter {
    pub fn parse(s: &str) -> Option<TopicFilter> {
        if s == "*" {
            return Some(TopicFilter::All);
        }
        Topic::parse(s).map(TopicFilter::Topic)
    }

    pub fn matches(&self, topic: &Topic) -> bool {
        match self {
            TopicFilter::All => true,
            TopicFilter::Topic(t) => t == topic,
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            TopicFilter::All => "*".to_string(),
            TopicFilter::Topic(t) => t.to_string(),
        }
    }
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ServerFrame {
    Event(Envelope),
    Control(Control),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// The subscription is in place; replay of events after `since` follows,
    /// up to at least `head`, then live events.
    Subscribed {
        topics: Vec<String>,
        since: u64,
        head: u64,
    },
    Unsubscribed {
        topics: Vec<String>,
    },
    Pong {
        nonce: Option<u64>,
    },
    /// A bad frame; the connection stays open.
    Error {
        error: ErrorDetail,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_parse_and_reject_unknowns() {
        let op: ClientOp = serde_json::from_str(r#"{"op":"subscribe","topics":["*"],"since":5}"#).unwrap();
        assert_eq!(op, ClientOp::Subscribe { topics: vec!["*".into()], since: 5 });
        let err = serde_json::from_str::<ClientOp>(r#"{"op":"frobnicate"}"#).unwrap_err();
        assert!(err.to_string().contains("frobnicate"), "{err}");
        let err = serde_json::from_str::<ClientOp>(r#"{"op":"subscribe","topics":[],"sinse":1}"#).unwrap_err();
        assert!(err.to_string().contains("sinse"), "{err}");
    }

    #[test]
    fn filters() {
        let t = Topic::session("a");
        assert!(TopicFilter::parse("*").unwrap().matches(&t));
        assert!(TopicFilter::parse("session:a").unwrap().matches(&t));
        assert!(!TopicFilter::parse("session:b").unwrap().matches(&t));
        assert!(TopicFilter::parse("bogus").is_none());
    }
}
