#!/usr/bin/env bash
# Build the compute-agent binary RPM from this checkout (`make rpm`).
#
# The source tarball is the working tree as git sees it (tracked files plus
# untracked ones that are not ignored), so what you build is what you test,
# like `pip install .`. Python dependencies come from pip's configured package
# registry; nothing else is fetched. Output: $RPM_OUT (default dist/).
#
# Environment: RPM_OUT (output dir), RPM_TOPDIR (rpmbuild scratch, default
# build/rpm), BASE_PYTHON (interpreter the venv is built from, default
# /usr/bin/python3). pip's own variables (PIP_CACHE_DIR, PIP_INDEX_URL, ...)
# pass through to the build.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${RPM_OUT:-$repo/dist}
top=${RPM_TOPDIR:-$repo/build/rpm}
base_python=${BASE_PYTHON:-/usr/bin/python3}

if ! command -v rpmbuild >/dev/null 2>&1; then
    echo "installing rpm (provides rpmbuild)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm
fi

version=$("$base_python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")

source_files() {
    if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$repo" ls-files -z --cached --others --exclude-standard
    else
        (cd "$repo" && find . \( -name .git -o -name .venv -o -name build -o -name dist \) -prune \
            -o -type f -printf '%P\0')
    fi
}

rm -rf "$top"
mkdir -p "$top"/{SOURCES,SPECS,BUILD,RPMS,SRPMS,BUILDROOT} "$out"
# Files deleted in the working tree but still tracked are left out.
source_files | (cd "$repo" && while IFS= read -r -d '' f; do
    [ -f "$f" ] && printf '%s\0' "$f"
done) | tar -C "$repo" --null -T - --transform "s,^,compute-agent-$version/," \
    --owner=0 --group=0 --numeric-owner -czf "$top/SOURCES/compute-agent-$version.tar.gz"

rpmbuild -bb --quiet \
    --define "_topdir $top" \
    --define "ca_version $version" \
    --define "base_python $base_python" \
    "$repo/packaging/rpm/compute-agent.spec"

find "$top/RPMS" -name "compute-agent-$version-*.rpm" -exec cp -t "$out" {} +
ls -1 "$out"/compute-agent-"$version"-*.rpm
