//! `custody run`: the service, its HTTP endpoints and its signals.

use crate::config::Config;
use crate::kafka::service::Service;
use crate::ownership::Reloadable;
use crate::service::http;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `custody run`: loads the configuration, serves HTTP, runs until SIGTERM
/// or Ctrl-C (SIGHUP reloads the ownership configuration). Exit codes: 0
/// after a clean shutdown, 2 on a configuration or runtime error.
pub fn command(config_path: Option<&std::path::Path>) -> u8 {
    let mut config = match config_path {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                return 2;
            }
        },
        None => Config::default(),
    };
    config.service.apply_env(std::env::vars());
    if config.service.ownership.is_some() && config.service.ownership_topic.is_some() {
        tracing::error!(
            "ownership comes from both a file and a topic (ownership.config or CUSTODY_OWNERSHIP_CONFIG, and ownership.topic or CUSTODY_OWNERSHIP_TOPIC); give one"
        );
        return 2;
    }
    let ownership = match &config.service.ownership {
        Some(p) => match Reloadable::load(p) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!("ownership: {e}");
                return 2;
            }
        },
        None => None,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return 2;
        }
    };
    let service = match Service::start(&config, ownership) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    let listen = config.service.http_listen.clone();
    let state = http::AppState {
        health: Arc::clone(&service.health),
        metrics: Arc::clone(&service.metrics),
    };
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!("serving /metrics, /healthz, /readyz on {listen}");
        tokio::spawn(http::serve(listener, state));
        wait_for_signal(&service).await;
        Ok::<(), String>(())
    });
    if let Err(e) = served {
        tracing::error!("{e}");
        let _ = service.stop();
        return 2;
    }
    tracing::info!("shutting down");
    match service.stop() {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            2
        }
    }
}

/// Waits for SIGTERM, Ctrl-C or the worker's end; SIGHUP sets the reload
/// flag.
async fn wait_for_signal(service: &Service) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            Some(()) = async { match term.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => return,
            Some(()) = async { match hup.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading the ownership configuration");
                service.health.reload.store(true, Ordering::Relaxed);
            }
            _ = tick.tick() => {
                if service.finished() {
                    return;
                }
            }
        }
    }
}
