//! `turnstiled` as a Windows service, under the Service Control Manager
//! (the `windows-service` crate, which wraps `StartServiceCtrlDispatcherW`,
//! `RegisterServiceCtrlHandlerExW` and `SetServiceStatus`).
//!
//! - `turnstiled service install [FLAGS...]` registers the service
//!   (`turnstiled`, automatic start, LocalSystem) to run
//!   `turnstiled service run FLAGS...`;
//! - `turnstiled service uninstall` removes it;
//! - `turnstiled service run` is what the SCM starts: it reports RUNNING,
//!   serves until SERVICE_CONTROL_STOP or SERVICE_CONTROL_SHUTDOWN, then
//!   reports STOPPED. Logs go to `%ProgramData%\turnstile\turnstiled.log`.
//!
//! Equivalent `sc.exe` commands: `sc.exe create turnstiled binPath=
//! "C:\path\turnstiled.exe service run" start= auto` and
//! `sc.exe delete turnstiled`.
//!
//! The broker itself is not started from here: `cli.rs` hands its entry
//! point to [`command`] as a function ([`Entry`]), so this module never
//! reaches back into the command line. On Unix the service manager is
//! systemd (see `packaging/turnstiled.service`) and [`command`] says so.

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;

/// Resolves when the service manager asks the broker to stop, with the
/// reason to log.
pub type Stop = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// The broker run as a service: its flags (those after `service run`) and
/// the stop request in place of Ctrl-C; returns the Win32 exit code.
pub type Entry = fn(Vec<OsString>, Stop) -> u32;

/// Why `turnstiled service ...` did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Not `install`, `uninstall` or `run`.
    #[error("usage: turnstiled service install|uninstall|run [FLAGS...]")]
    Usage,
    /// This platform has no service manager of this kind.
    #[error(
        "turnstiled service ... is for the Windows Service Control Manager; on Linux run \
         turnstiled under systemd with packaging/turnstiled.service (Type=notify), or directly"
    )]
    Unsupported,
    /// The service manager refused.
    #[error("turnstiled service {verb}: {reason}")]
    Failed {
        /// The verb given.
        verb: String,
        /// The service manager's error.
        reason: String,
    },
}

/// `turnstiled service install|uninstall|run [FLAGS...]` (`rest` is what
/// follows `service`); `run` serves with `entry`. Answers what was done,
/// for the log line.
pub fn command(rest: &[OsString], entry: Entry) -> Result<&'static str, ServiceError> {
    #[cfg(windows)]
    {
        let verb = rest.first().and_then(|v| v.to_str()).unwrap_or("");
        let flags = rest.iter().skip(1).cloned().collect::<Vec<_>>();
        let failed = |e: windows_service::Error| ServiceError::Failed {
            verb: verb.to_string(),
            reason: e.to_string(),
        };
        match verb {
            "install" => scm::install(flags)
                .map(|_| "installed the turnstiled service")
                .map_err(failed),
            "uninstall" => scm::uninstall()
                .map(|_| "removed the turnstiled service")
                .map_err(failed),
            "run" => scm::run(flags, entry)
                .map(|_| "the turnstiled service stopped")
                .map_err(failed),
            _ => Err(ServiceError::Usage),
        }
    }
    #[cfg(not(windows))]
    {
        let _ = (rest, entry);
        Err(ServiceError::Unsupported)
    }
}

/// The Service Control Manager's side.
#[cfg(windows)]
mod scm {
    use std::ffi::OsString;
    use std::sync::Mutex;
    use std::time::Duration;

    use windows_service::service::{
        ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
        ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_service::{define_windows_service, service_dispatcher};

    /// The service's name in the SCM.
    pub const SERVICE_NAME: &str = "turnstiled";

    use super::{Entry, Stop};

    /// What the service main runs: the flags given after `service run` and the
    /// broker's entry point, handed over by [`run`] (the SCM calls the service
    /// main through a plain function pointer, with no room for either).
    static RUN: Mutex<Option<(Vec<OsString>, Entry)>> = Mutex::new(None);

    define_windows_service!(ffi_service_main, service_main);

    /// Hands the process to the SCM; returns when the service has stopped.
    pub fn run(args: Vec<OsString>, entry: Entry) -> windows_service::Result<()> {
        if let Ok(mut run) = RUN.lock() {
            *run = Some((args, entry));
        }
        service_dispatcher::start(SERVICE_NAME, ffi_service_main)
    }

    fn service_main(_scm_args: Vec<OsString>) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<&'static str>();
        let stop_tx = Mutex::new(Some(stop_tx));
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Some(tx) = stop_tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send("service stop request");
                }
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(status) = service_control_handler::register(SERVICE_NAME, handler) else {
            return;
        };
        let report = |state, accept, code| {
            let _ = status.set_service_status(ServiceStatus {
                service_type: ServiceType::OWN_PROCESS,
                current_state: state,
                controls_accepted: accept,
                exit_code: ServiceExitCode::Win32(code),
                checkpoint: 0,
                wait_hint: Duration::from_secs(10),
                process_id: None,
            });
        };
        report(
            ServiceState::Running,
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            0,
        );
        let Some((args, entry)) = RUN.lock().ok().and_then(|mut run| run.take()) else {
            report(ServiceState::Stopped, ServiceControlAccept::empty(), 1);
            return;
        };
        let stop: Stop =
            Box::pin(async move { stop_rx.await.unwrap_or("service control handler gone") });
        let code = entry(args, stop);
        report(ServiceState::Stopped, ServiceControlAccept::empty(), code);
    }

    /// Registers the service to run this executable with `service run FLAGS`.
    pub fn install(flags: Vec<OsString>) -> windows_service::Result<()> {
        let manager =
            ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CREATE_SERVICE)?;
        let exe = std::env::current_exe().map_err(windows_service::Error::Winapi)?;
        let mut launch = vec![OsString::from("service"), OsString::from("run")];
        launch.extend(flags);
        let info = ServiceInfo {
            name: SERVICE_NAME.into(),
            display_name: "turnstile broker".into(),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: exe,
            launch_arguments: launch,
            dependencies: vec![],
            account_name: None,
            account_password: None,
        };
        manager.create_service(&info, ServiceAccess::CHANGE_CONFIG)?;
        Ok(())
    }

    /// Removes the service (stop it first).
    pub fn uninstall() -> windows_service::Result<()> {
        let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
        let service = manager.open_service(SERVICE_NAME, ServiceAccess::DELETE)?;
        service.delete()
    }
}
