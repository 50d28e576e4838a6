# Shared by tools/pi-check.sh, tools/image.sh and tools/ha-check.sh (sourced, not run): the host tools they
# need, and a Debian arm64 root built with mmdebstrap under qemu-user, cached as a folder keyed by everything
# that shapes it (ha-check uses its mirror and mount helpers for its own amd64 root).
#
#   ensure_apt_tools CMD:PACKAGE ...     apt-get install the PACKAGE of each CMD that is not on PATH
#   ensure_binfmt_aarch64                qemu-user's aarch64 binfmt handler registered with the F flag
#   host_mirror                          the Debian mirror the host's apt uses
#   debian_root_key RELEASE COMPONENTS PACKAGES [MMDEBSTRAP_OPTION...]   12 hex digits naming the root
#   debian_root_build RELEASE DIR LOG COMPONENTS PACKAGES [MMDEBSTRAP_OPTION...]
#   mount_for_chroot DIR CPUINFO         /proc (with CPUINFO over /proc/cpuinfo), /dev, /sys under DIR;
#                                        each mount point is pushed onto MOUNTS; cleanup_mounts undoes them
#   pi4_cpuinfo                          a Raspberry Pi 4's /proc/cpuinfo, for emulated runs (see below)
#
# PACKAGES is a comma-separated list; COMPONENTS a space-separated one ("main non-free-firmware"). The key
# covers the release, the mirror, the components, the sorted package list and the options, so a change to
# any of them builds a new root (the old folder stays until removed) and an unchanged rerun reuses it.
# Needs root. Callers define die() (one message, exit) before using these.

# Commands as `cmd:package`: `mkfs.vfat:dosfstools`. One apt-get run for all that are missing.
ensure_apt_tools() {
    local missing=() item
    for item in "$@"; do
        command -v "${item%%:*}" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "${item%%:*}" >/dev/null 2>&1 ||
            missing+=("${item#*:}")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "installing ${missing[*]} with apt" >&2
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null; } || die "apt-get install ${missing[*]} failed"
}

ensure_binfmt_aarch64() {
    local misc=/proc/sys/fs/binfmt_misc
    [ -e $misc/register ] || mount -t binfmt_misc binfmt_misc $misc || die "cannot mount binfmt_misc"
    if [ ! -e $misc/qemu-aarch64 ]; then
        # The package's own registration (F: the interpreter is opened now, so it works inside a chroot).
        local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
        [ -f $conf ] || die "$conf missing (qemu-user-static too old?)"
        grep -v '^#' $conf | head -n 1 >$misc/register || die "cannot register $conf"
    fi
    grep -qx enabled $misc/qemu-aarch64 || echo 1 >$misc/qemu-aarch64
    grep -q '^flags:.*F' $misc/qemu-aarch64 || die "qemu-aarch64 is registered without the F flag"
}

# The mirror the host's apt uses (deb822 or one-line sources), for the root.
host_mirror() {
    local uri
    uri=$(grep -rhs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -m1 '/debian/\?$' || true)
    [ -n "$uri" ] || uri=$(grep -rhs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
        awk '{print $2}' | grep -m1 '/debian/\?$' || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

debian_root_key() {
    local release=$1 components=$2 packages=$3
    shift 3
    printf '%s\n' "$release" "$(host_mirror)" "$components" "$(tr ',' '\n' <<<"$packages" | sort -u | paste -sd,)" "$@" |
        sha256sum | cut -c1-12
}

# Mount points under a folder, deepest first (also ones a killed run left behind).
mounts_under() { awk -v r="$1/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r; }

MOUNTS=()
cleanup_mounts() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
    MOUNTS=()
}

# qemu-user passes the host's /proc/cpuinfo through, and LiteRT's CPU detection then crashes inside
# Interpreter(): a root that runs the daemon gets a Pi 4's (BCM2711, four Cortex-A72: CPU part 0xd08).
pi4_cpuinfo() {
    local n
    for n in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$n"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n'
        printf 'CPU revision\t: 3\n\n'
    done
    printf 'Hardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 100000000000pi4c\n'
    printf 'Model\t\t: Raspberry Pi 4 Model B Rev 1.1\n'
}

mount_for_chroot() {
    local dir=$1 cpuinfo=$2
    mount -t proc proc "$dir/proc" && MOUNTS+=("$dir/proc")
    mount --bind "$cpuinfo" "$dir/proc/cpuinfo" && MOUNTS+=("$dir/proc/cpuinfo")
    mount --rbind /dev "$dir/dev" && MOUNTS+=("$dir/dev")
    mount -t sysfs sysfs "$dir/sys" && MOUNTS+=("$dir/sys")
}

# Builds into DIR.tmp and renames it to DIR only when mmdebstrap succeeded, so a killed build is never
# mistaken for a root. Security and updates suites included, as an installed system has them.
debian_root_build() {
    local release=$1 dir=$2 log=$3 components=$4 packages=$5 mirror security m
    shift 5
    mirror=$(host_mirror)
    security=${mirror%/debian*}/debian-security
    mkdir -p "$(dirname "$dir")"
    for m in $(mounts_under "$dir.tmp"); do umount -l "$m" || true; done  # a killed mmdebstrap's
    rm -rf --one-file-system "$dir.tmp"
    if ! nice -n 10 mmdebstrap --quiet --arch=arm64 --variant=apt --include="$packages" "$@" "$release" "$dir.tmp" \
        "deb $mirror $release $components" "deb $mirror $release-updates $components" \
        "deb $security $release-security $components" >"$log" 2>&1; then
        rm -rf --one-file-system "$dir.tmp"
        return 1
    fi
    rm -rf --one-file-system "$dir"
    mv "$dir.tmp" "$dir"
}
