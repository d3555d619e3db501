#!/usr/bin/env bash
# Checks that vendor/russh is exactly russh 0.65.1 as published on crates.io with the patches
# of vendor/patches/ applied in order (vendor/README.md says what each does). Run by
# scripts/test.sh; fails naming the files that differ.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.65.1
# The checksum crates.io publishes for russh-0.65.1.crate (its index entry, "cksum").
sha256=94be3d86c71b9ed220a675c405e35c7a02565a009bf8da2e9cc13a700320a5c5

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

crate=""
for cached in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/russh-$version.crate; do
  [[ -f $cached ]] && crate=$cached && break
done
if [[ -z $crate ]]; then
  crate=$work/russh-$version.crate
  curl -sSfL --retry 3 -o "$crate" "https://static.crates.io/crates/russh/russh-$version.crate"
fi
echo "$sha256  $crate" | sha256sum --check --quiet -

tar -xzf "$crate" -C "$work"
tree=$work/russh-$version
rm -f "$tree/.cargo_vcs_info.json" "$tree/Cargo.toml.orig"
for p in vendor/patches/*.patch; do
  patch --quiet --directory="$tree" -p1 --no-backup-if-mismatch <"$p" || {
    echo "check-vendor: $p does not apply to russh $version (after the patches before it)" >&2
    exit 1
  }
done
if ! diff -r --brief --exclude=target --exclude=.cargo-ok "$tree" vendor/russh; then
  echo "check-vendor: vendor/russh is not russh $version + vendor/patches/*.patch" >&2
  echo "check-vendor: regenerate the patches (vendor/README.md, 'Changing the patches')" >&2
  exit 1
fi
echo "check-vendor: vendor/russh = russh $version + $(ls vendor/patches/*.patch | wc -l) patches"
