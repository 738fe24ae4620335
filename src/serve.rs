//! The service: wires the concrete parts (store, rules, classifier, connector, tokens) into
//! a runner, starts the case workers, the timer loop and recovery, and serves the API on a
//! listener the caller bound, until the caller's shutdown future completes.
//!
//! Recovery does not hold the start: the cases left from the last run are listed before the
//! first connection is taken and handed to the worker pool, which works them off at its
//! full throughput while intake goes on; `/readyz` is `200` once the workers run, and shows
//! how many left-over cases are still to run (`casegraph_recovery_pending`).
//!
//! Shutdown order: stop taking connections and let open requests finish (bounded by
//! `server.shutdown_grace`); stop the timer loop; stop recovery and let each worker finish
//! the case in hand; drop the runner, which closes the store after its last commit. Work
//! that was accepted but not run keeps its stored trigger and resumes at the next start.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use casegraph_engine::classify;
use casegraph_engine::exec::{Connector, SystemClock};
use casegraph_engine::rules::Rules;
use casegraph_engine::runner::{Parts, Runner};
use casegraph_engine::store::{self, Store};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::api::{self, Inner};
use crate::auth::{Role, Tokens};
use crate::backoffice::SimulatedBackOffice;
use crate::config::{Config, Roots};
use crate::connector::HttpConnector;
use crate::library::Library;
use crate::metrics::{MeasuredClassifier, Metrics, TimedBackend};
use crate::webhook::Notifier;
use crate::workers::{CaseRunner, Workers};

/// Name of the file the bootstrap admin token is written to, in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Opens the store in `dir`, with its writes timed for the metrics and watched by the
/// disk guard.
fn open_store(
    config: &Config,
    metrics: &Metrics,
    disk: &Arc<crate::storage::Guard>,
) -> anyhow::Result<Store> {
    // `open_backend` keeps the backend a data directory already holds.
    let options = &config.store;
    let backend = store::open_backend(&config.data_dir, options)?;
    let timed = Arc::new(TimedBackend {
        inner: backend,
        write_duration: metrics.store_write_duration.clone(),
        disk: disk.clone(),
    });
    Ok(Store::with_backend(timed, options.max_group)?)
}

/// With no token at all, creates an admin token and leaves it in `admin.token`.
fn bootstrap_admin(config: &Config, tokens: &Tokens) -> anyhow::Result<()> {
    if !tokens.is_empty() || !config.server.bootstrap_admin_token {
        if tokens.is_empty() {
            tracing::warn!(
                "no tokens: create one with `casegraph token create --data {} --role admin`",
                config.data_dir.display()
            );
        }
        return Ok(());
    }
    let (_, secret) = tokens.create(Role::Admin, Some("admin"))?;
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    // A file already there (left from an earlier tokens file, or planted with a wider
    // mode) is replaced, never written through.
    crate::auth::write_secret(&path, &secret)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(
        "no tokens yet: created an admin token in {} (move it somewhere safe and delete the file)",
        path.display()
    );
    Ok(())
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    // Certificate problems stop the start before anything is opened.
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()?;
    // A malformed hub key stops the start: a box must not run believing it takes rollouts.
    let rollouts = crate::fleet::rollout::Options::from_config(&config)?;
    let service = Service::build(&config)?;
    service.recover()?;
    // Schedules new to this store start from now; written before the first connection,
    // so an idle box commits nothing once it serves (ADR 0018).
    service
        .runner
        .mark_new_schedules()
        .context("cannot store the marks of new schedules")?;
    let jobs = Jobs::spawn(&config, &service, rollouts);
    serve(&config, listener, tls, service.state.clone(), shutdown).await?;
    jobs.stop().await;
    service.stop().await
}

/// The running parts of the service, held until shutdown stops them in order.
struct Service {
    runner: Arc<Runner>,
    workers: Arc<Workers>,
    /// How workers, timers and handlers run a case (holds the runner too).
    cases: CaseRunner,
    notifier: Notifier,
    /// What the handlers share (holds the runner, workers and notifier too).
    state: api::AppState,
}

impl Service {
    /// Opens the data directory, the store, tokens, workflows, model and connector, and
    /// starts the workers and the notifier; takes no connection yet.
    fn build(config: &Config) -> anyhow::Result<Service> {
        // Before anything is written: the directory 0700, its contents private, umask 077.
        crate::data_dir::prepare(&config.data_dir)?;
        let metrics = Arc::new(Metrics::new());
        // The intent model loads on a thread of its own while the store opens and the
        // workflows compile: the longest parts of a start, and neither needs the other.
        std::thread::scope(|scope| {
            let loading = std::thread::Builder::new()
                .name("model-load".into())
                .spawn_scoped(scope, || {
                    // The model's threads (batching, ONNX Runtime's) start from this one
                    // and inherit its priority: below intake's, like the case workers.
                    crate::priority::lower_this_thread(config.runtime.background_nice);
                    load_model(config, &metrics)
                })
                .context("cannot start a thread to load the intent model")?;
            Service::build_with(config, &metrics, move || {
                loading
                    .join()
                    .map_err(|_| anyhow::anyhow!("loading the intent model panicked"))?
            })
        })
    }

    /// [`Service::build`] after the data directory is prepared; `model` waits for the
    /// intent model loading beside it.
    fn build_with(
        config: &Config,
        metrics: &Arc<Metrics>,
        model: impl FnOnce() -> anyhow::Result<(Arc<dyn classify::Service>, String)>,
    ) -> anyhow::Result<Service> {
        let metrics = metrics.clone();
        let started = std::time::Instant::now();
        // The profile was validated when the configuration was built; it is read again for
        // the effective settings and how it fits this machine (logged, shown to admins).
        let profile = config
            .profile
            .as_deref()
            .map(crate::profile::Loaded::load)
            .transpose()?;
        let settings = Arc::new(crate::settings::Effective::new(config, profile.as_ref()));
        settings.log();
        let memory = crate::memory::Guard::start(&config.memory)?;
        let storage = crate::storage::Guard::start(&config.storage, &config.data_dir)?;
        let store = open_store(config, &metrics, &storage)?;
        let tokens = Arc::new(Tokens::open(&config.data_dir)?);
        bootstrap_admin(config, &tokens)?;
        let rules = Arc::new(Rules::new(config.rules.clone()));
        let (library, catalog) =
            Library::open(&config.workflows_dir, &config.data_dir, rules.clone()).with_context(
                || {
                    format!(
                        "cannot load workflows from {}",
                        config.workflows_dir.display()
                    )
                },
            )?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "store, tokens and workflows ready"
        );
        let (classifier, model_version) = model()?;
        let (connector, simulated) = connector(config)?;
        let runner = Arc::new(Runner::new(Parts {
            store,
            catalog: Arc::new(catalog),
            rules,
            connector,
            classifier: classifier.clone(),
            clock: Arc::new(SystemClock),
            versions_dir: config.data_dir.join("versions"),
            priority_sla: config.tasks.priority_sla,
            quiet_hours: config.contact.quiet_hours.clone(),
        }));
        // After a failed write the disk guard asks again with one small write a sample.
        // Weak: the guard must not keep the store open past shutdown.
        let probe = Arc::downgrade(&runner);
        storage.set_probe(move || match probe.upgrade() {
            Some(runner) => runner.store().probe_write(),
            None => Err(store::Error::Closed),
        });
        // Sends stored `reply_to` notifications, those left from the last run first.
        let webhook_roots = Roots::load(config.webhooks.ca_file.as_deref(), "webhooks.ca_file")?;
        let notifier = Notifier::start(&config.webhooks, &webhook_roots, &runner);
        let cases = CaseRunner {
            runner: runner.clone(),
            metrics: metrics.clone(),
            notifier: notifier.clone(),
        };
        let workers = Workers::start(
            config.limits.workers,
            config.limits.queue_depth,
            config.runtime.background_nice,
            cases.clone(),
        )?;
        resume_when_writes_succeed(&storage, &runner, &workers);
        let state = Arc::new(Inner {
            runner: runner.clone(),
            classifier,
            model: model_version,
            tokens,
            library: Arc::new(library),
            publish_lock: tokio::sync::Mutex::new(()),
            workers: workers.clone(),
            cases: cases.clone(),
            intake: Arc::new(Semaphore::new(config.limits.max_in_flight)),
            compiles: Arc::new(Semaphore::new(config.limits.max_compiles)),
            model_calls: Arc::new(Semaphore::new(config.limits.max_classify)),
            metrics,
            retry_after_secs: config.limits.retry_after_secs,
            queue_wait: config.limits.queue_wait,
            request_timeout: config.server.request_timeout,
            body_limit_bytes: config.limits.body_limit_bytes,
            simulated_backoffice: simulated,
            notifier: notifier.clone(),
            settings,
            memory,
            storage,
        });
        Ok(Service {
            runner,
            workers,
            cases,
            notifier,
            state,
        })
    }

    /// Recovery: every case with stored work resumes from its last checkpoint, through the
    /// workers. Listed before the first connection, so only the last run's cases are in it.
    fn recover(&self) -> anyhow::Result<()> {
        let left = self
            .runner
            .pending()
            .context("cannot list the cases left from the last run")?;
        if !left.is_empty() {
            tracing::info!(
                cases = left.len(),
                "resuming the cases left from the last run through the workers"
            );
        }
        self.workers.recover(left)?;
        Ok(())
    }

    /// Lets each worker finish the case in hand and the notifier its delivery, then drops
    /// the runner, which closes the store after its last commit.
    async fn stop(self) -> anyhow::Result<()> {
        let Service {
            runner,
            workers,
            cases,
            notifier,
            state,
        } = self;
        drop(state);
        drop(cases);
        tokio::task::spawn_blocking(move || {
            workers.stop();
            notifier.stop();
        })
        .await?;
        // The last reference: dropping it closes the store after its last commit.
        match Arc::try_unwrap(runner) {
            Ok(runner) => drop(runner),
            Err(_) => tracing::warn!("the runner is still referenced at shutdown"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Loads the intent model before the first connection is taken: `readyz` answering means
/// the model answers too. Files are verified against the model card first. Returns the
/// classifier, measured for the metrics, and the model's version.
fn load_model(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<dyn classify::Service>, String)> {
    let loading = std::time::Instant::now();
    let model =
        crate::classifier::load(&config.models_dir, &config.inference).with_context(|| {
            format!(
                "cannot load the intent model `{}` from {}",
                config.inference.model,
                config.models_dir.display()
            )
        })?;
    let model_version = model.model().to_string();
    tracing::info!(
        model = %model_version,
        load_ms = loading.elapsed().as_millis() as u64,
        threads = config.inference.threads,
        sessions = config.inference.sessions,
        batch = config.inference.batch_size,
        "intent model loaded"
    );
    let classifier: Arc<dyn classify::Service> = Arc::new(MeasuredClassifier {
        inner: Arc::new(model),
        metrics: metrics.clone(),
    });
    Ok((classifier, model_version))
}

/// The back office the `call` nodes reach: the configured one over HTTP, or the built-in
/// simulation (`true`), which every answer and the console then say.
fn connector(config: &Config) -> anyhow::Result<(Arc<dyn Connector>, bool)> {
    let chosen: (Arc<dyn Connector>, bool) = match &config.connectors.base_url {
        Some(url) => (
            Arc::new(HttpConnector::new(
                url,
                config.connectors.timeout,
                &Roots::load(config.connectors.ca_file.as_deref(), "connectors.ca_file")?,
            )),
            false,
        ),
        None => {
            tracing::warn!(
                "connectors go to the built-in SIMULATED back office (no connectors.base_url configured); its answers say \"simulated\": true"
            );
            (Arc::new(SimulatedBackOffice), true)
        }
    };
    Ok(chosen)
}

/// Cases whose work a failed write left stored go back to the workers once writes succeed
/// again, not only at the next start (running a case is idempotent: one with nothing left
/// to do is skipped). Weak references: the guard must not keep them alive past shutdown.
fn resume_when_writes_succeed(
    storage: &crate::storage::Guard,
    runner: &Arc<Runner>,
    workers: &Arc<Workers>,
) {
    let (runner, workers) = (Arc::downgrade(runner), Arc::downgrade(workers));
    storage.on_resumed(move || {
        let (Some(runner), Some(workers)) = (runner.upgrade(), workers.upgrade()) else {
            return;
        };
        match runner.pending() {
            Ok(left) if !left.is_empty() => {
                tracing::info!(
                    cases = left.len(),
                    "writes succeed again: resuming the cases with stored work"
                );
                if let Err(e) = workers.recover(left) {
                    tracing::error!("cannot resume the cases with stored work: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot list the cases with stored work: {e}"),
        }
    });
}

/// The background jobs beside the workers: the timer loop, and retention and the fleet
/// relay if configured.
struct Jobs {
    /// Tells every job to stop.
    stop: watch::Sender<bool>,
    timers: tokio::task::JoinHandle<()>,
    retention: Option<tokio::task::JoinHandle<()>>,
    /// Signed rollouts from the hub (`[fleet]` with a `hub_key`).
    rollouts: Option<tokio::task::JoinHandle<()>>,
    /// The fleet relay, if `[fleet]` is set.
    relay: Option<tokio::task::JoinHandle<()>>,
}

impl Jobs {
    fn spawn(
        config: &Config,
        service: &Service,
        rollouts: Option<crate::fleet::rollout::Options>,
    ) -> Jobs {
        let (stop, stop_rx) = watch::channel(false);
        let timers = spawn_timers(service.cases.clone(), config.server.timer_interval, stop_rx);
        // Retention: finished cases to archive files when the box is idle (if configured).
        let retention = crate::retention::spawn(
            &config.retention,
            &config.data_dir,
            service.runner.store().clone(),
            service.state.metrics.retention.clone(),
            config.fleet.enabled(),
            stop.subscribe(),
        );
        let rollouts = rollouts.map(|options| {
            crate::fleet::rollout::spawn(options, service.state.clone(), stop.subscribe())
        });
        // The fleet relay: what the box commits, into its branch stream (if configured).
        let relay =
            crate::fleet::relay::spawn(&config.fleet, service.state.clone(), stop.subscribe());
        Jobs {
            stop,
            timers,
            retention,
            rollouts,
            relay,
        }
    }

    /// Stops every job and waits for it to end.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.timers.await;
        if let Some(retention) = self.retention {
            let _ = retention.await;
        }
        if let Some(rollouts) = self.rollouts {
            let _ = rollouts.await;
        }
        if let Some(relay) = self.relay {
            let _ = relay.await;
        }
    }
}

/// Timers and SLAs: every `every`, the due timers fire, until `stop` changes.
fn spawn_timers(
    cases: CaseRunner,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let c = cases.clone();
                    let _ = tokio::task::spawn_blocking(move || fire_due(&c)).await;
                }
                _ = stop.changed() => break,
            }
        }
    })
}

/// Serves `state` on `listener` until `shutdown` completes and open requests finish, or
/// `server.shutdown_grace` has passed since.
async fn serve(
    config: &Config,
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    state: api::AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data = %config.data_dir.display(), "casegraph serving");
    let (signal_tx, mut signal_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    let mut graceful = signal_rx.clone();
    let stop_serving = async move {
        let _ = graceful.wait_for(|s| *s).await;
        tracing::info!("shutting down: no new connections; finishing open requests");
    };
    let app = api::app(state);
    // Header size, header read time and connection count are bounded per connection.
    let limits = crate::http::Limits::from(&config.server);
    let server: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match tls {
        Some(tls) => Box::pin(crate::http::serve(
            crate::tls::Listener::new(listener, tls, config.server.max_connections)?,
            app,
            limits,
            stop_serving,
        )),
        None => Box::pin(crate::http::serve(listener, app, limits, stop_serving)),
    };
    let grace = config.server.shutdown_grace;
    tokio::select! {
        () = server => {}
        _ = async {
            let _ = signal_rx.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("open requests did not finish within {grace:?}; stopping anyway"),
    }
    Ok(())
}

fn fire_due(cases: &CaseRunner) {
    let runner = &cases.runner;
    match runner.arm_due(runner.now()) {
        Ok(armed) => {
            for id in armed {
                if let Some(status) = cases.process(&id) {
                    tracing::info!(case = %id, status = status.as_str(), "timer fired");
                }
            }
        }
        Err(e) => tracing::error!("timers could not fire: {e}"),
    }
    // Workflow schedules on the same tick: the first tick after a start catches up on
    // occurrences missed while the box was off (ADR 0018).
    match runner.fire_schedules() {
        Ok(started) => {
            for id in started {
                if let Some(status) = cases.process(&id) {
                    tracing::info!(case = %id, status = status.as_str(), "scheduled case ran");
                }
            }
        }
        Err(e) => tracing::error!("schedules could not fire: {e}"),
    }
}
