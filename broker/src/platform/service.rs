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

/// The flags given after `service run`, for the service main.
static RUN_ARGS: Mutex<Vec<OsString>> = Mutex::new(Vec::new());

define_windows_service!(ffi_service_main, service_main);

/// Hands the process to the SCM; returns when the service has stopped.
pub fn run(args: Vec<OsString>) -> windows_service::Result<()> {
    if let Ok(mut a) = RUN_ARGS.lock() {
        *a = args;
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
    let args = RUN_ARGS.lock().map(|a| a.clone()).unwrap_or_default();
    let stop = async move { stop_rx.await.unwrap_or("service control handler gone") };
    let code = crate::cli::run_service(args, stop);
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
