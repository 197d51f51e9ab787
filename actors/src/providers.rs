//! The providers actor: what the daemon has learned about each provider's
//! agent that outlives any one session, above all how it can be held to a
//! session's policy (docs/SECURITY.md). It is the only writer of
//! [`ProviderRecord`]s and keeps the registry's view of them current, so the
//! front and the sessions can read it without asking.
//!
//! What it learns comes from three places: a provider worker whose agent has
//! just started (`Report`), a turn that caught the agent acting without an
//! approval (`Violation`, which makes the provider `unverified` for good, for
//! this configuration), and a probe it runs itself when a plan-only session
//! is about to be created on a provider nothing is known about yet (`Learn`).

use crate::context::Context;
use crate::error::{DaemonError, DaemonResult};
use bosun_driver::{EnforcementReport, ProviderSpec};
use bosun_proto::{events, Enforcement, EventData, Sandbox, Topic};
use bosun_state::{Batch, Owner, ProviderRecord, ProviderViolation};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::time::Duration;

/// How long a probe may take: starting the agent, `initialize`, a session.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(45);

pub struct ProvidersActor;

pub struct ProvidersState {
    ctx: Context,
    /// Probes under way, by provider, with who waits for each.
    probing: HashMap<String, Vec<RpcReplyPort<DaemonResult<EnforcementReport>>>>,
}

pub enum ProvidersMsg {
    /// What a worker's driver found when its agent started.
    Report {
        provider: String,
        report: EnforcementReport,
    },
    /// A turn caught the agent acting without an approval in a plan-only
    /// session; answered once it is on record.
    Violation {
        provider: String,
        session_id: String,
        turn_id: String,
        what: String,
        reply: RpcReplyPort<()>,
    },
    /// How the provider is held to a policy, probing the agent first if
    /// nothing is known yet.
    Learn {
        provider: String,
        reply: RpcReplyPort<DaemonResult<EnforcementReport>>,
    },
    /// A probe has finished.
    Probed {
        provider: String,
        result: Result<EnforcementReport, String>,
    },
    /// A module install or rollback (done on a task, src/modules.rs) made
    /// `version` of a provider current: register it and announce it.
    ModuleSwitched {
        spec: ProviderSpec,
        version: String,
        replaced: Option<String>,
        reply: RpcReplyPort<DaemonResult<()>>,
    },
    Crash,
}

impl Actor for ProvidersActor {
    type Msg = ProvidersMsg;
    type State = ProvidersState;
    type Arguments = Context;

    /// Loads what was learned under the present configuration; what was
    /// learned about a configuration since changed is forgotten.
    async fn pre_start(
        &self,
        _myself: ActorRef<ProvidersMsg>,
        ctx: Context,
    ) -> Result<ProvidersState, ActorProcessingErr> {
        let mut stale = Batch::by(Owner::Providers);
        let mut forgotten = 0;
        for record in ctx.store.scan::<ProviderRecord>()? {
            match ctx.providers.get(&record.name) {
                Some(spec) if spec.fingerprint() == record.fingerprint => {
                    ctx.providers.set_enforcement(&record.name, report_of(&record));
                }
                _ => {
                    stale.delete::<ProviderRecord>(&record.name);
                    forgotten += 1;
                }
            }
        }
        if forgotten > 0 {
            ctx.store.commit(stale).await?;
            tracing::info!(forgotten, "forgot what was learned about providers whose config changed");
        }
        Ok(ProvidersState { ctx, probing: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<ProvidersMsg>,
        msg: ProvidersMsg,
        state: &mut ProvidersState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProvidersMsg::Report { provider, report } => state.learned(&provider, report).await?,
            ProvidersMsg::Violation { provider, session_id, turn_id, what, reply } => {
                state.violation(&provider, session_id, turn_id, what).await?;
                let _ = reply.send(());
            }
            ProvidersMsg::Learn { provider, reply } => state.learn(&myself, provider, reply),
            ProvidersMsg::Probed { provider, result } => {
                let answer = match result {
                    Ok(report) => {
                        state.learned(&provider, report).await?;
                        state.known(&provider)
                    }
                    Err(why) => {
                        tracing::warn!(%provider, %why, "probing the provider's agent failed");
                        Err(DaemonError::Unavailable(format!(
                            "could not start provider {provider:?} to learn whether it asks before it acts: {why}"
                        )))
                    }
                };
                for reply in state.probing.remove(&provider).unwrap_or_default() {
                    let _ = reply.send(answer.clone());
                }
            }
            ProvidersMsg::ModuleSwitched { spec, version, replaced, reply } => {
                let _ = reply.send(state.module_switched(spec, version, replaced).await);
            }
            ProvidersMsg::Crash => {
                if state.ctx.settings.fault_injection {
                    panic!("injected fault: providers");
                }
            }
        }
        Ok(())
    }
}

/// The registry's form of a record.
fn report_of(record: &ProviderRecord) -> EnforcementReport {
    EnforcementReport { enforcement: record.enforcement, detail: record.detail.clone(), agent: record.agent.clone() }
}

impl ProvidersState {
    fn spec(&self, provider: &str) -> DaemonResult<ProviderSpec> {
        self.ctx.providers.get(provider).ok_or_else(|| DaemonError::NotFound(format!("unknown provider {provider:?}")))
    }

    fn known(&self, provider: &str) -> DaemonResult<EnforcementReport> {
        self.ctx
            .providers
            .enforcement(provider)
            .ok_or_else(|| DaemonError::NotFound(format!("unknown provider {provider:?}")))
    }

    /// Records what a driver or a probe found, unless the provider was
    /// caught acting without asking: that stays until its config changes.
    async fn learned(&mut self, provider: &str, report: EnforcementReport) -> DaemonResult<()> {
        let spec = self.spec(provider)?;
        let existing = self.ctx.store.get::<ProviderRecord>(provider)?.filter(|r| r.fingerprint == spec.fingerprint());
        let mut record = match existing {
            Some(record) if record.violation.is_some() => {
                if record.agent.is_some() || report.agent.is_none() {
                    return Ok(());
                }
                // Keep the verdict; only learn the agent's name.
                ProviderRecord { agent: report.agent, ..record }
            }
            Some(record)
                if record.enforcement == report.enforcement
                    && record.detail == report.detail
                    && (report.agent.is_none() || record.agent == report.agent) =>
            {
                return Ok(());
            }
            _ => ProviderRecord {
                name: provider.to_string(),
                fingerprint: spec.fingerprint(),
                enforcement: report.enforcement,
                detail: report.detail,
                agent: report.agent,
                learned_at: bosun_proto::now_ts(),
                violation: None,
            },
        };
        record.learned_at = bosun_proto::now_ts();
        self.save(record).await
    }

    async fn violation(
        &mut self,
        provider: &str,
        session_id: String,
        turn_id: String,
        what: String,
    ) -> DaemonResult<()> {
        let spec = self.spec(provider)?;
        let agent = self.ctx.providers.enforcement(provider).and_then(|e| e.agent);
        let detail = format!(
            "the agent acted without asking in session {session_id} ({what}); it stays unverified until its \
             provider's config changes"
        );
        let record = ProviderRecord {
            name: provider.to_string(),
            fingerprint: spec.fingerprint(),
            enforcement: Enforcement::Unverified,
            detail,
            agent,
            learned_at: bosun_proto::now_ts(),
            violation: Some(ProviderViolation { session_id, turn_id, what, at: bosun_proto::now_ts() }),
        };
        tracing::warn!(%provider, "provider marked unverified after a policy violation");
        self.save(record).await
    }

    /// Persists a record and shows it in the registry, announcing it on the
    /// system topic.
    async fn save(&mut self, record: ProviderRecord) -> DaemonResult<()> {
        let mut batch = Batch::by(Owner::Providers);
        batch.put(&record)?;
        let learned = events::ProviderStatusEvent {
            provider: record.name.clone(),
            kind: None,
            status: events::ProviderStatusKind::Enforcement {
                enforcement: record.enforcement,
                detail: record.detail.clone(),
                agent: record.agent.clone(),
            },
        };
        batch.event(EventData::ProviderStatus(learned).into_event(Topic::system()));
        self.ctx.store.commit(batch).await?;
        self.ctx.providers.set_enforcement(&record.name, report_of(&record));
        Ok(())
    }

    /// Puts a module's provider in the registry (new sessions start it;
    /// running ones keep the agent they have) and announces it on the
    /// system topic, once that is durable.
    async fn module_switched(
        &mut self,
        spec: ProviderSpec,
        version: String,
        replaced: Option<String>,
    ) -> DaemonResult<()> {
        let provider = spec.name.clone();
        let kind = spec.kind.clone();
        self.ctx.providers.register_module(spec).map_err(|e| DaemonError::Conflict(e.to_string()))?;
        let mut batch = Batch::by(Owner::Providers);
        let installed = events::ProviderStatusEvent {
            provider: provider.clone(),
            kind: Some(kind),
            status: events::ProviderStatusKind::Installed { version: version.clone(), replaced },
        };
        batch.event(EventData::ProviderStatus(installed).into_event(Topic::system()));
        self.ctx.store.commit(batch).await?;
        tracing::info!(%provider, %version, "a module's provider is registered");
        Ok(())
    }

    /// Answers at once when the provider is known; else starts a probe (one
    /// per provider at a time) and answers when it is done.
    fn learn(
        &mut self,
        myself: &ActorRef<ProvidersMsg>,
        provider: String,
        reply: RpcReplyPort<DaemonResult<EnforcementReport>>,
    ) {
        match self.known(&provider) {
            Ok(report) if report.enforcement != Enforcement::Unknown => {
                let _ = reply.send(Ok(report));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
            Ok(_) => {}
        }
        let waiting = self.probing.entry(provider.clone()).or_default();
        waiting.push(reply);
        if waiting.len() > 1 {
            return;
        }
        let Some(spec) = self.ctx.providers.get(&provider) else { return };
        let registry = self.ctx.providers.clone();
        let scratch = self.ctx.settings.data_dir.join("probe").join(&provider);
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(PROBE_TIMEOUT, registry.probe(&spec, &scratch)).await {
                Ok(result) => result,
                Err(_) => Err(format!("it did not answer within {} s", PROBE_TIMEOUT.as_secs())),
            };
            let _ = myself.send_message(ProvidersMsg::Probed { provider, result });
        });
    }
}

/// Why a plan-only session on `provider` must be refused, if it must: the
/// provider is `unverified`, and no jail without network bounds what an
/// agent that does not ask could do.
pub fn plan_only_refusal(ctx: &Context, provider: &str, sandbox: Sandbox, network: bool) -> Option<DaemonError> {
    if sandbox.is_offline_jail(network) {
        return None;
    }
    let report = ctx.providers.enforcement(provider)?;
    (report.enforcement == Enforcement::Unverified).then(|| {
        DaemonError::PolicyUnenforceable(format!(
            "provider {provider:?}: {}",
            bosun_driver::unenforceable(&report.detail)
        ))
    })
}

/// Asks the providers actor how `provider` is held to a policy, probing it
/// if need be.
pub async fn learn(provider: &str) -> DaemonResult<EnforcementReport> {
    let provider = provider.to_string();
    crate::route::call_within::<ProvidersMsg, _, _>(
        crate::names::PROVIDERS,
        PROBE_TIMEOUT + Duration::from_secs(5),
        |reply| ProvidersMsg::Learn { provider, reply },
    )
    .await
    .and_then(|r| r)
}

/// Has the providers actor register a module's provider; see
/// [`ProvidersMsg::ModuleSwitched`].
pub async fn module_switched(spec: ProviderSpec, version: String, replaced: Option<String>) -> DaemonResult<()> {
    crate::route::call::<ProvidersMsg, _, _>(crate::names::PROVIDERS, |reply| ProvidersMsg::ModuleSwitched {
        spec,
        version,
        replaced,
        reply,
    })
    .await
    .and_then(|r| r)
}
