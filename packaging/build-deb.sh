#!/usr/bin/env bash
# Builds the Debian package from the crate's [package.metadata.deb]:
#
#   packaging/build-deb.sh                      release build -> target/debian/sockwarden_<v>-1_<arch>.deb
#   packaging/build-deb.sh --binary PATH        package this already-built sockwarden instead
#                                               (tests/package.rs packages its dev build)
#   packaging/build-deb.sh --output DIR         write the .deb into DIR
#
# Needs cargo-deb (`cargo install cargo-deb --locked`; .ci/run installs it) and strip
# (binutils). Steps: man pages and shell completions generated from the clap definitions
# into target/assets (examples/gen-assets.rs), then `cargo deb`, which adds the unit and
# tmpfiles from packaging/ with their maintainer scripts. Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

binary=
output=$root/target/debian
while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=$(realpath "$2"); shift 2 ;;
        --output) mkdir -p "$2"; output=$(realpath "$2"); shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if ! command -v cargo-deb >/dev/null; then
    echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 2
fi
# The daemon's documented default config ships as /etc/sockwarden/sockwarden.toml.
if [ ! -f packaging/sockwarden.toml ]; then
    echo "build-deb.sh: packaging/sockwarden.toml (the daemon's default config) is missing" >&2
    exit 2
fi

# Assets at a fixed place under the crate (not $CARGO_TARGET_DIR): Cargo.toml names them.
cargo run --quiet --example gen-assets -- "$root/target/assets" >/dev/null

deb_args=(--output "$output" --strip)
if [ -n "$binary" ]; then
    # cargo-deb packages `target/release/sockwarden` of the target dir it is given: stage the
    # prebuilt binary there rather than building (a dev build is fine for a package test).
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/release"
    cp "$binary" "$stage/release/sockwarden"
    CARGO_TARGET_DIR=$stage cargo deb --no-build "${deb_args[@]}" >&2
else
    cargo deb "${deb_args[@]}" >&2
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
ls -t "$output"/sockwarden_"$version"-*.deb | head -n1
