//! Many watches on one `WatchMany` stream: watches are added and cancelled by a caller-chosen
//! id; each event arrives once with the ids of every watch of the stream it is for.
//!
//! It does not reconnect or resume: a watch ends with its error (`Expired`: relist), and when
//! the stream ends every watch on it has ended; the caller opens another stream and adds its
//! watches again from the resourceVersions they reached.

use crate::etcd::ClientError;
use crate::resources::{watch_event, ListParams, WatchEvent};
use berth_proto::apiv1::{self, watch_many_request::Request as Op};
use berth_proto::manifest::Object;
use tokio::sync::mpsc;
use tonic::Streaming;

/// Creates and cancels queued towards the server before `add`/`cancel` wait.
pub const WATCH_MANY_REQUESTS_QUEUED: usize = 64;

/// What a [`WatchMany`] stream delivers.
#[derive(Debug)]
pub enum ManyEvent {
    /// The watch is open (its initial events, if it asked for them, follow).
    Created(i64),
    /// One event for each of these watches (boxed: objects are large, the other variants small).
    Event {
        watch_ids: Vec<i64>,
        event: Box<WatchEvent<Object>>,
    },
    /// These watches ended with this error (`Expired`: relist and add them again).
    Ended { watch_ids: Vec<i64>, error: ClientError },
    /// These watches ended after a [`WatchMany::cancel`].
    Canceled(Vec<i64>),
}

/// One open `WatchMany` stream; see [`crate::ResourceClient::watch_many`].
pub struct WatchMany {
    requests: mpsc::Sender<apiv1::WatchManyRequest>,
    stream: Streaming<apiv1::WatchManyResponse>,
}

impl WatchMany {
    pub(crate) fn new(
        requests: mpsc::Sender<apiv1::WatchManyRequest>,
        stream: Streaming<apiv1::WatchManyResponse>,
    ) -> WatchMany {
        WatchMany { requests, stream }
    }

    async fn request(&self, op: Op) -> Result<(), ClientError> {
        self.requests
            .send(apiv1::WatchManyRequest { request: Some(op) })
            .await
            .map_err(|_| ClientError::Watch("the WatchMany stream has ended".into()))
    }

    /// Adds a watch of `resource` (plural, e.g. "pods") in `ns` ("" = all namespaces) from
    /// `params.resource_version` ("" = ADDED for every current object first), with
    /// BOOKMARK events if `bookmarks`. `watch_id` must not be open on this stream.
    pub async fn add(
        &self,
        watch_id: i64,
        resource: &str,
        ns: &str,
        params: &ListParams,
        bookmarks: bool,
    ) -> Result<(), ClientError> {
        self.request(Op::Create(apiv1::WatchCreate {
            watch_id,
            watch: Some(apiv1::WatchRequest {
                resource: resource.to_string(),
                namespace: ns.to_string(),
                options: Some(params.to_wire(bookmarks)),
            }),
        }))
        .await
    }

    pub async fn cancel(&self, watch_id: i64) -> Result<(), ClientError> {
        self.request(Op::Cancel(apiv1::WatchCancel { watch_id })).await
    }

    /// The next message; an error means the stream (and every watch on it) has ended.
    pub async fn next(&mut self) -> Result<ManyEvent, ClientError> {
        let msg = self
            .stream
            .message()
            .await?
            .ok_or_else(|| ClientError::Watch("the server ended the WatchMany stream".into()))?;
        let ids = msg.watch_ids;
        Ok(match msg.event {
            None if msg.created => ManyEvent::Created(ids.first().copied().unwrap_or_default()),
            None if msg.canceled => ManyEvent::Canceled(ids),
            None => return Err(ClientError::Watch("a WatchMany response without an event".into())),
            Some(ev) => match watch_event(ev, Ok) {
                Ok(event) => ManyEvent::Event {
                    watch_ids: ids,
                    event: Box::new(event),
                },
                Err(error) => ManyEvent::Ended {
                    watch_ids: ids,
                    error,
                },
            },
        })
    }
}
