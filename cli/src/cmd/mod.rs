//! One module per command area; [`run`] dispatches a parsed command to it.

pub(crate) mod acl;
pub(crate) mod desc;
pub(crate) mod image;
pub(crate) mod key;
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
    }
}
