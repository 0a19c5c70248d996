#!/bin/sh
# Scale benchmark of the simulator: a 4 GiB image (64 KiB chunks scheduled as 4 MiB pieces)
# to every host of 100, 1,000 and 10,000-host topologies (10 sites). Prints wall time, user
# CPU time (the meaningful figure on a shared machine), peak RSS and the simulated makespan
# per size. Run from the repository root:
#   sh simulations/benches/scale.sh
# (release build; set CARGO_TARGET_DIR to reuse a target directory).
set -eu
cargo build --release -p vwnet-sim
bin="${CARGO_TARGET_DIR:-target}/release/vwnet-sim"
out="${TMPDIR:-/tmp}/vwnet-sim-scale"
printf '%-8s %10s %10s %12s %14s %12s\n' hosts wall_s user_s peak_rss_MiB makespan_sim_s flows
for n in 100 1k 10k; do
    /usr/bin/time -f '%e %U %M' -o "$out.time" "$bin" run "simulations/scenarios/scale-$n.toml" --out "$out/$n" >"$out.log"
    read -r wall user rss <"$out.time"
    makespan=$(awk -F, 'NR==2 {print $4}' "$out/$n/summary.csv")
    flows=$(awk -F, 'NR==2 {print $10}' "$out/$n/summary.csv")
    printf '%-8s %10s %10s %12d %14s %12s\n' "$n" "$wall" "$user" "$((rss / 1024))" "$makespan" "$flows"
done
