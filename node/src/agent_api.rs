//! The agent's `NodeAgent` gRPC service (the kubelet's logs/exec/image endpoints): container
//! logs from the files [`crate::logs`] lays out, exec through the runtime into a running
//! container, and image import into the node's store. Callers are the API server's Proxy,
//! which has looked the pod up and passes its uid: the agent trusts names only with a uid.

use crate::logs::{self, ReadPlan};
use crate::Shared;
use berth_client::agent::{EXEC_OUTPUT_BYTES_MAX, EXEC_TIMEOUT_MS, IMAGE_ARCHIVE_BYTES_MAX};
use berth_proto::agentv1::{
    node_agent_server::NodeAgent, ExecRequest, ExecResponse, ImageChunk, ImportImageResponse, ImportedImage,
    LogChunk, LogsRequest,
};
use futures::{Stream, StreamExt};
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status, Streaming};

/// Log chunks queued between the file reader and the gRPC stream.
pub const LOG_QUEUE_LEN: usize = 16;
/// Log streams served at once (each holds a blocking thread while it reads or follows).
pub const LOG_STREAMS_MAX: usize = 64;
/// Execs running at once (each is a runtime process).
pub const EXECS_MAX: usize = 32;

pub struct AgentService {
    pub shared: Arc<Shared>,
    log_streams: Arc<Semaphore>,
    execs: Arc<Semaphore>,
}

impl AgentService {
    pub fn new(shared: Arc<Shared>) -> AgentService {
        AgentService {
            shared,
            log_streams: Arc::new(Semaphore::new(LOG_STREAMS_MAX)),
            execs: Arc::new(Semaphore::new(EXECS_MAX)),
        }
    }
}

/// A slot of `limit`, or RESOURCE_EXHAUSTED naming `what`.
fn slot(limit: &Arc<Semaphore>, what: &str, max: usize) -> Result<OwnedSemaphorePermit, Status> {
    limit.clone().try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!("too many {what} at once on this node (at most {max})"))
    })
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

fn need(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

impl AgentService {
    fn pod_log_dir(&self, namespace: &str, pod: &str, uid: &str) -> PathBuf {
        logs::pod_log_dir(&self.shared.cfg.data_dir, namespace, pod, uid)
    }
}

#[tonic::async_trait]
impl NodeAgent for AgentService {
    type LogsStream = LogStream;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        let r = req.into_inner();
        for (f, v) in [
            ("pod", &r.pod),
            ("pod_uid", &r.pod_uid),
            ("container", &r.container),
        ] {
            need(f, v)?;
        }
        let dir = self
            .pod_log_dir(&r.namespace, &r.pod, &r.pod_uid)
            .join(&r.container);
        let instances = logs::instances(&dir);
        let Some(instance) = logs::pick(&instances, r.previous) else {
            return Err(Status::not_found(if r.previous {
                format!(
                    "previous terminated container {:?} in pod {:?} not found",
                    r.container, r.pod
                )
            } else {
                format!(
                    "container {:?} in pod {:?} has not started yet (no log)",
                    r.container, r.pod
                )
            }));
        };
        let tail_lines = match r.tail_lines {
            Some(n) if n < 0 => return Err(Status::invalid_argument("tail_lines must not be negative")),
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => None,
        };
        let plan = ReadPlan {
            log: dir.join(format!("{instance}.log")),
            tail_lines,
            follow: r.follow,
        };
        let permit = slot(&self.log_streams, "log streams", LOG_STREAMS_MAX)?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>(LOG_QUEUE_LEN);
        let shared = self.shared.clone();
        let (uid, container) = (r.pod_uid.clone(), r.container.clone());
        tokio::task::spawn_blocking(move || {
            let running = || shared.running.get(&uid, &container) == Some(instance);
            if let Err(e) = logs::stream(&plan, &tx, &running) {
                tracing::warn!(pod = %uid, container = %container, "logs: {e}");
            }
            drop(permit);
        });
        let out = tokio_stream::wrappers::ReceiverStream::new(rx).map(|data| Ok(LogChunk { data }));
        Ok(Response::new(Box::pin(out)))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = req.into_inner();
        for (f, v) in [
            ("pod", &r.pod),
            ("pod_uid", &r.pod_uid),
            ("container", &r.container),
        ] {
            need(f, v)?;
        }
        if r.command.is_empty() {
            return Err(Status::invalid_argument("command is required"));
        }
        if self.shared.running.get(&r.pod_uid, &r.container).is_none() {
            return Err(Status::failed_precondition(format!(
                "container {:?} in pod {:?} is not running",
                r.container, r.pod
            )));
        }
        let _permit = slot(&self.execs, "execs", EXECS_MAX)?;
        let state_root = self
            .shared
            .cfg
            .run_dir
            .join("pods")
            .join(&r.pod_uid)
            .join("runtime");
        let out = self
            .shared
            .runtime
            .exec_output(
                &state_root,
                &r.container,
                &r.command,
                Duration::from_millis(EXEC_TIMEOUT_MS),
                EXEC_OUTPUT_BYTES_MAX,
            )
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ExecResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
            truncated: out.truncated,
        }))
    }

    async fn import_image(
        &self,
        req: Request<Streaming<ImageChunk>>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        let mut chunks = req.into_inner();
        let spool_dir = self.shared.cfg.data_dir.join("tmp");
        std::fs::create_dir_all(&spool_dir)
            .map_err(|e| Status::internal(format!("{}: {e}", spool_dir.display())))?;
        let spool = tempfile_in(&spool_dir)?;
        let r = self.receive_and_import(&mut chunks, &spool).await;
        let _ = std::fs::remove_file(&spool);
        r
    }
}

fn tempfile_in(dir: &std::path::Path) -> Result<PathBuf, Status> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(dir.join(format!("import-{}-{nanos}.tar", std::process::id())))
}

impl AgentService {
    async fn receive_and_import(
        &self,
        chunks: &mut Streaming<ImageChunk>,
        spool: &std::path::Path,
    ) -> Result<Response<ImportImageResponse>, Status> {
        let io = |e: std::io::Error| Status::internal(format!("{}: {e}", spool.display()));
        let mut f = std::fs::File::create(spool).map_err(io)?;
        let (mut tag, mut bytes, mut first) = (String::new(), 0u64, true);
        while let Some(c) = chunks.next().await {
            let c = c?;
            if first {
                tag = c.tag;
                first = false;
            }
            bytes += c.data.len() as u64;
            if bytes > IMAGE_ARCHIVE_BYTES_MAX {
                return Err(Status::resource_exhausted(format!(
                    "image archive larger than {IMAGE_ARCHIVE_BYTES_MAX} bytes"
                )));
            }
            // Chunks are at most a MiB: a blocking write of one is short.
            f.write_all(&c.data).map_err(io)?;
        }
        f.sync_all().map_err(io)?;
        drop(f);
        let (images, spool) = (self.shared.images.clone(), spool.to_path_buf());
        let tag = (!tag.is_empty()).then_some(tag);
        let infos = tokio::task::spawn_blocking(move || images.import_archive(&spool, tag.as_deref()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("importing the archive: {e}")))?;
        for i in &infos {
            tracing::info!(image = %i.name, id = %i.config_digest, "imported");
        }
        Ok(Response::new(ImportImageResponse {
            images: infos
                .into_iter()
                .map(|i| ImportedImage {
                    name: i.name,
                    config_digest: i.config_digest,
                })
                .collect(),
        }))
    }
}

/// Serves the agent's API on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    use berth_client::agent::IMAGE_MESSAGE_BYTES_MAX;
    use berth_proto::agentv1::node_agent_server::NodeAgentServer;
    let svc = NodeAgentServer::new(AgentService::new(shared))
        .max_decoding_message_size(IMAGE_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(berth_client::agent::EXEC_RESPONSE_BYTES_MAX);
    let res = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming(berth_client::listen::incoming(listener))
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "agent API stopped");
    }
}
