# Sourced by the check drivers: need_install WHO installs, as root with
# apt-get, the Debian packages of every tool in the caller's NEED table
# (NEED[tool]="packages") that is not on PATH; otherwise prints the command
# to run and exits. WHO names the driver in messages.
need_install() {
    local who=$1 missing=() tool
    for tool in "${!NEED[@]}"; do
        command -v "$tool" >/dev/null || missing+=(${NEED[$tool]})
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [ "$(id -u)" != 0 ]; then
        echo "$who: missing: ${missing[*]}"
        echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
        exit 1
    fi
    echo "== $who: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}
