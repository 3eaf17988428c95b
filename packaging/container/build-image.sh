#!/usr/bin/env bash
# Builds the container image from packaging/container/Containerfile, offline (FROM scratch,
# nothing pulled):
#
#   packaging/container/build-image.sh                 image target/release/sockwarden (made
#                                                      by `cargo build --release`) as
#                                                      localhost/sockwarden:<version>
#   packaging/container/build-image.sh --binary PATH   image this sockwarden instead
#                                                      (tests/it/container.rs images its dev build)
#   packaging/container/build-image.sh --tag TAG       tag the image TAG
#
# Needs podman and strip (binutils); never runs cargo. The image's root, assembled in a temp
# dir: the stripped binary, exactly the shared libraries `ldd` lists for it plus the dynamic
# loader (at the paths ldd prints), /etc/sockwarden/sockwarden.toml (packaging/sockwarden.toml),
# /etc/sockwarden/policies/default.toml, /etc/passwd and /etc/group (root only), and empty
# /var/lib/sockwarden and /run/netns. Prints the tag last.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
license=$(sed -n 's/^license = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
binary=$root/target/release/sockwarden
tag=localhost/sockwarden:$version
while [ $# -gt 0 ]; do
    case $1 in
        --binary) [ $# -ge 2 ] || { echo "build-image.sh: --binary needs a PATH" >&2; exit 2; }
                  binary=$2; shift 2 ;;
        --tag) [ $# -ge 2 ] || { echo "build-image.sh: --tag needs a TAG" >&2; exit 2; }
               tag=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "build-image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

for tool in podman strip ldd; do
    if ! command -v "$tool" >/dev/null; then
        case $tool in
            podman) hint="apt-get install podman" ;;
            strip) hint="apt-get install binutils" ;;
            ldd) hint="apt-get install libc-bin" ;;
        esac
        echo "build-image.sh: $tool is missing: $hint" >&2
        exit 2
    fi
done
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
    echo "build-image.sh: no executable sockwarden at $binary: run \`cargo build --release\`, or pass --binary PATH" >&2
    exit 2
fi
binary=$(realpath "$binary")
for f in packaging/container/Containerfile packaging/sockwarden.toml policies/default.toml; do
    if [ ! -f "$f" ]; then
        echo "build-image.sh: $f is missing" >&2
        exit 2
    fi
done

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
chmod 0755 "$rootfs"

install -d -m 0755 "$rootfs/usr/bin" "$rootfs/etc/sockwarden/policies" "$rootfs/run/netns"
install -d -m 0750 "$rootfs/var/lib/sockwarden"   # as packaging/sockwarden.tmpfile makes it
strip -o "$rootfs/usr/bin/sockwarden" "$binary"
chmod 0755 "$rootfs/usr/bin/sockwarden"

# Exactly what the dynamic loader maps: `lib => /path (addr)` lines and the loader itself
# (`/path (addr)`); linux-vdso is the kernel's. A static binary has none.
libs=()
if ldd_out=$(ldd "$binary" 2>&1); then
    if grep -q 'not found' <<<"$ldd_out"; then
        echo "build-image.sh: ldd cannot resolve every library of $binary:" >&2
        echo "$ldd_out" >&2
        exit 2
    fi
    mapfile -t libs < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
elif ! grep -q -e 'not a dynamic executable' -e 'statically linked' <<<"$ldd_out"; then
    echo "build-image.sh: ldd $binary failed: $ldd_out" >&2
    exit 2
fi
for lib in "${libs[@]}"; do
    install -d -m 0755 "$rootfs$(dirname "$lib")"
    # -L: the file itself where ldd names a symlink (the loader, on a merged-/usr host).
    cp -L "$lib" "$rootfs$lib"
done

install -m 0644 packaging/sockwarden.toml "$rootfs/etc/sockwarden/sockwarden.toml"
install -m 0644 policies/default.toml "$rootfs/etc/sockwarden/policies/default.toml"
# The audit log names the actor's user (getpwuid); glibc reads these files directly.
printf 'root:x:0:0:root:/:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"

labels=()
if command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1; then
    if revision=$(git rev-parse HEAD 2>/dev/null); then
        labels+=(--label "org.opencontainers.image.revision=$revision")
    fi
    if source=$(git remote get-url origin 2>/dev/null); then
        labels+=(--label "org.opencontainers.image.source=$source")
    fi
fi

# --layers=false: one image, no intermediate images left behind.
podman build --pull=never --layers=false \
    -f "$root/packaging/container/Containerfile" \
    --build-arg "VERSION=$version" \
    --build-arg "LICENSE=$license" \
    "${labels[@]}" \
    -t "$tag" \
    "$rootfs" >&2
echo "$tag"
