//! One module per command area; [`run`] dispatches a parsed command to it.

pub(crate) mod acl;
pub(crate) mod desc;
pub(crate) mod factory;
pub(crate) mod image;
pub(crate) mod key;
pub(crate) mod lock;
pub(crate) mod manage;
pub(crate) mod node;
pub(crate) mod store;
pub(crate) mod ws;

use crate::args::Command;
use crate::context::Context;

/// Runs one parsed command.
pub(crate) fn run(command: Command, ctx: &Context) -> anyhow::Result<()> {
    match command {
        Command::Key(cmd) => key::run(cmd, ctx),
        Command::Desc(cmd) => desc::run(cmd, ctx),
        Command::Acl(cmd) => acl::run(cmd, ctx),
        Command::Image(cmd) => image::run(cmd, ctx),
        Command::Store(cmd) => store::run(cmd, ctx),
        Command::Node(cmd) => node::run(cmd, ctx),
        Command::Publish(args) => ws::publish(args, ctx),
        Command::Ls(args) => ws::ls(args, ctx),
        Command::Inspect(args) => ws::inspect(args, ctx),
        Command::Pull(args) => ws::pull(args, ctx),
        Command::Lock(cmd) => lock::run(cmd, ctx),
        Command::Deploy(args) => manage::deploy(args, ctx),
        Command::Start(args) => manage::start(args, ctx),
        Command::Stop(args) => manage::stop(args, ctx),
        Command::Pause(args) => manage::pause(args, ctx),
        Command::Unpause(args) => manage::unpause(args, ctx),
        Command::Save(args) => manage::save(args, ctx),
        Command::Undeploy(args) => manage::undeploy(args, ctx),
        Command::Migrate(args) => manage::migrate(args, ctx),
        Command::WsState(args) => manage::ws_state(args, ctx),
        Command::Create(args) => factory::create(args, ctx),
        Command::Extend(args) => factory::extend(args, ctx),
        Command::Pin(args) => factory::pin(args, true, ctx),
        Command::Unpin(args) => factory::pin(args, false, ctx),
        Command::Delegate(args) => factory::delegate(args, ctx),
    }
}
