//! `urpnet-node archive ...`: this node's side of the anonymised archive.

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use urpnet_proto::v1::archive_desk_client::ArchiveDeskClient;
use urpnet_proto::v1::{ArchiveStatusRequest, ArchiveStatusResponse};

use super::{TokenInterceptor, status_error};

/// A connected ArchiveDesk client.
pub type ArchiveDesk = ArchiveDeskClient<InterceptedService<Channel, TokenInterceptor>>;

/// Archive commands.
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Records made from closed tickets, sent to the registry, waiting; the
    /// last push and its error.
    Status,
    /// Anonymise closed tickets and push everything waiting now, with a
    /// progress bar (supervisors). Exits non-zero if the registry cannot be
    /// reached; what was sent stays sent.
    Sync {
        /// Give up after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// Runs an archive command.
///
/// # Errors
/// Connection, permission or registry failures.
pub async fn run(mut client: ArchiveDesk, cmd: ArchiveCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ArchiveCommand::Status => {
            let s = client
                .archive_status(ArchiveStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            print_status(&s, json);
        }
        ArchiveCommand::Sync { timeout } => {
            let before = client
                .archive_status(ArchiveStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let bar = indicatif::ProgressBar::new(before.made.max(1));
            if !json {
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} records acknowledged by the registry {msg}",
                    )
                    .expect("template"),
                );
                bar.set_position(before.sent);
            } else {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            // The node pushes everything waiting in one call; the bar
            // follows its status meanwhile.
            let mut watcher = client.clone();
            let poll_bar = bar.clone();
            let poll = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(s) = watcher.archive_status(ArchiveStatusRequest {}).await {
                        let s = s.into_inner();
                        poll_bar.set_length(s.made.max(1));
                        poll_bar.set_position(s.sent);
                    }
                }
            });
            let result =
                tokio::time::timeout(timeout, client.sync_archive(ArchiveStatusRequest {}))
                    .await
                    .context("timed out; the node goes on pushing at its interval")?;
            poll.abort();
            let s = result.map_err(status_error)?.into_inner();
            bar.set_length(s.made.max(1));
            bar.set_position(s.sent);
            bar.finish_with_message("done");
            print_status(&s, json);
        }
    }
    Ok(())
}

fn print_status(s: &ArchiveStatusResponse, json: bool) {
    if json {
        println!(
            "{}",
            urpnet_proto::cli::to_json("urpnet.v1.ArchiveStatusResponse", s)
        );
        return;
    }
    let mut t = urpnet_proto::cli::table();
    t.set_header(vec![
        "made",
        "sent",
        "waiting",
        "refused",
        "last push",
        "last error",
    ]);
    t.add_row(vec![
        s.made.to_string(),
        s.sent.to_string(),
        s.pending.to_string(),
        s.refused.to_string(),
        if s.last_push_ms == 0 {
            "never".into()
        } else {
            urpnet_proto::cli::time_ms(s.last_push_ms)
        },
        if s.last_error.is_empty() {
            "-".into()
        } else {
            s.last_error.clone()
        },
    ]);
    println!("{t}");
}
