//! Live events over the WebSocket, resumable: `bosun-client`'s follower,
//! with its notices ("connection lost", "reconnected") on stderr.

use super::http::Server;
use bosun_client::{Follower, FollowerConfig};
use bosun_proto::Envelope;
use std::sync::Arc;

pub struct EventStream {
    follower: Follower,
}

impl EventStream {
    /// Connects and subscribes to `topics` from `since`: the daemon replays
    /// every stored event after it, then goes live.
    pub async fn open(server: &Server, topics: Vec<String>, since: u64) -> anyhow::Result<EventStream> {
        let config = FollowerConfig { notices: Some(Arc::new(|text: &str| super::note(text))), ..Default::default() };
        let follower = Follower::open(server.client().clone(), topics, since, config).await?;
        Ok(EventStream { follower })
    }

    /// The next event, with the frame exactly as the daemon sent it (for `--json`).
    pub async fn next(&mut self) -> anyhow::Result<(Envelope, String)> {
        let followed = self.follower.next().await?;
        Ok((followed.envelope, followed.frame))
    }
}
