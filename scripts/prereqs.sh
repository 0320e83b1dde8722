#!/usr/bin/env bash
# The system packages changefold needs, checked and (on Debian/Ubuntu, as root)
# installed. `make demo`, `make test` and .ci/run call it first; it is a quick
# no-op when everything is there.
#
#   scripts/prereqs.sh            everything `make test` needs
#   scripts/prereqs.sh --demo     only what `make demo` needs (no browser, no docker-compose)
#   scripts/prereqs.sh --check    report what is missing, install nothing (exit 1 if any)
#
# What and why:
#   Java 17+            Kafka 4 and Kafka Connect run as plain JVM processes
#   Maven               resolves the Kafka / Connect / Debezium jars (`make jars`)
#   PostgreSQL server   the source database of the local stack (initdb, postgres); psql
#   python3 + venv      the .venv that `make install` creates (Python 3.11+)
#   make, CA certificates
#   Chromium + fonts    the browser tests (tests/e2e) drive Debian's chromium
#   libatomic1          Playwright's driver (a Node binary in the .venv) links libatomic.so.1,
#                       which a minimal Debian root file system lacks
#   docker-compose      the tests validate compose.yaml with it
#   a `postgres` user   Postgres refuses to run as root; as root the stack runs it as that user
#
# Honoured settings: PYTHON, JAVA_HOME, CHANGEFOLD_JAVA, CHANGEFOLD_MVN,
# CHANGEFOLD_PG_BIN_DIR, CHANGEFOLD_PG_OS_USER, CHANGEFOLD_CHROMIUM.
set -euo pipefail

usage() { sed -n '6,8s/^#  *//p' "$0"; }

scope="test"
install=1
for arg in "$@"; do
    case "$arg" in
        --demo) scope=demo ;;
        --check) install=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "prereqs: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
CHROMIUM=${CHANGEFOLD_CHROMIUM:-/usr/bin/chromium}
PG_OS_USER=${CHANGEFOLD_PG_OS_USER:-postgres}

os=other
if [[ "$(uname -s)" == Darwin ]]; then
    os=macos
elif [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    os_id=$(. /etc/os-release && echo "${ID:-} ${ID_LIKE:-}")
    case " $os_id " in
        *" ubuntu "*) os=ubuntu ;;
        *" debian "*) os=debian ;;
    esac
fi

# -- checks: each sets nothing and returns 0 when the piece is there --------------

java_bin() {
    if [[ -n "${CHANGEFOLD_JAVA:-}" ]]; then echo "$CHANGEFOLD_JAVA"
    elif [[ -n "${JAVA_HOME:-}" ]]; then echo "$JAVA_HOME/bin/java"
    else command -v java || true
    fi
}

# The major version of a java executable; the JDK's `release` file first (no JVM start).
java_major() {
    local bin=$1 real release version=""
    real=$(readlink -f "$(command -v "$bin" || echo "$bin")" 2>/dev/null || echo "$bin")
    release="$(dirname "$(dirname "$real")")/release"
    if [[ -r "$release" ]]; then
        version=$(sed -n 's/^JAVA_VERSION="\([^"]*\)".*/\1/p' "$release")
    fi
    if [[ -z "$version" ]]; then
        version=$("$bin" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
    fi
    version=${version#1.}  # 1.8.0 -> 8
    echo "${version%%[.+-]*}"
}

have_java() {
    local bin major
    bin=$(java_bin)
    [[ -n "$bin" ]] && command -v "$bin" >/dev/null 2>&1 || return 1
    major=$(java_major "$bin")
    [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 17))
}

have_mvn() { command -v "${CHANGEFOLD_MVN:-mvn}" >/dev/null 2>&1; }

have_postgres() {
    if [[ -n "${CHANGEFOLD_PG_BIN_DIR:-}" ]]; then
        [[ -x "$CHANGEFOLD_PG_BIN_DIR/postgres" ]]
    else
        command -v postgres >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 ||
            compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null
    fi
}

have_psql() { command -v psql >/dev/null 2>&1; }
have_make() { command -v make >/dev/null 2>&1; }
have_certs() { [[ $os == macos || -s /etc/ssl/certs/ca-certificates.crt ]]; }
# 0: Python 3.11+ with venv and ensurepip; 1: no such Python; 3: older; 4: no venv/ensurepip.
python_status() {
    command -v "$PYTHON" >/dev/null 2>&1 || return 1
    "$PYTHON" -c '
import sys
if sys.version_info < (3, 11):
    sys.exit(3)
try:
    import ensurepip, venv
except ImportError:
    sys.exit(4)
' 2>/dev/null
}
have_chromium() { [[ -x "$CHROMIUM" ]]; }
have_fonts() { [[ $os == macos ]] || compgen -G "/usr/share/fonts/truetype/liberation*/*.ttf" >/dev/null; }
have_compose() { command -v docker-compose >/dev/null 2>&1; }
# Playwright's bundled Node driver links libatomic.so.1 (not on a minimal Debian/Ubuntu).
have_libatomic() {
    [[ $os == macos ]] && return 0
    compgen -G "/usr/lib/*/libatomic.so.1" >/dev/null || compgen -G "/lib/*/libatomic.so.1" >/dev/null ||
        compgen -G "/usr/lib64/libatomic.so.1" >/dev/null ||
        { command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libatomic\.so\.1 '; }
}

# -- what is missing ----------------------------------------------------------------

missing=()   # what, for the messages
apt=()       # Debian/Ubuntu packages
brew=()      # Homebrew formulae
casks=()     # Homebrew casks
manual=()    # what no package here fixes: printed as is

need() { missing+=("$1"); apt+=("$2"); [[ -n "${3:-}" ]] && brew+=("$3"); return 0; }

survey() {
    missing=() apt=() brew=() casks=() manual=()
    have_certs || need "CA certificates" ca-certificates
    have_make || need make make make
    local py=0
    python_status || py=$?
    case $py in
        0) ;;
        3) manual+=("$PYTHON is Python $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); changefold needs 3.11+: install one and run make with PYTHON=python3.11 (or newer)") ;;
        4) need "Python's venv and ensurepip for $PYTHON" python3-venv ;;
        *) if [[ $PYTHON == python3 ]]; then
                need "python3 (Python 3.11+)" python3 python@3.12
                [[ $os == macos ]] || apt+=(python3-venv)
            else
                manual+=("PYTHON=$PYTHON: not found (leave PYTHON unset for python3)")
            fi ;;
    esac
    if ! have_java; then
        local bin
        bin=$(java_bin)
        if [[ -n "$bin" ]] && command -v "$bin" >/dev/null 2>&1; then
            need "Java 17+ ($bin is Java $(java_major "$bin"))" "@java" openjdk@17
        else
            need "Java 17+ (no java found)" "@java" openjdk@17
        fi
    fi
    have_mvn || need "Maven (${CHANGEFOLD_MVN:-mvn})" maven maven
    if ! have_postgres; then
        need "PostgreSQL server (initdb, postgres)" postgresql postgresql@16
    elif ! have_psql; then
        need psql postgresql-client libpq
    fi
    if [[ $scope == test ]]; then
        if ! have_chromium; then
            missing+=("Chromium at $CHROMIUM")
            case $os in
                debian) apt+=(chromium) ;;
                ubuntu) manual+=("Ubuntu ships Chromium as a snap: snap install chromium, then export CHANGEFOLD_CHROMIUM=/snap/bin/chromium") ;;
                macos) casks+=(chromium)
                    manual+=("then export CHANGEFOLD_CHROMIUM=/Applications/Chromium.app/Contents/MacOS/Chromium") ;;
                *) apt+=(chromium) ;;
            esac
        fi
        have_fonts || need "fonts for the browser (Liberation)" fonts-liberation
        have_libatomic || need "libatomic.so.1 (Playwright's driver links it)" libatomic1
        have_compose || need docker-compose docker-compose docker-compose
    fi
    return 0
}

# The Java package: the distribution's default when it is 17 or newer, else OpenJDK 17.
java_package() {
    local major
    major=$(apt-cache depends default-jre-headless 2>/dev/null |
        sed -n 's/.*openjdk-\([0-9]*\)-jre-headless.*/\1/p' | head -n1)
    if [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 17)); then
        echo default-jre-headless
    else
        echo openjdk-17-jre-headless
    fi
}

apt_packages() {
    local p
    for p in "${apt[@]}"; do
        if [[ $p == "@java" ]]; then java_package; else echo "$p"; fi
    done
}

postgres_user_missing() { [[ $(id -u) -eq 0 ]] && ! id "$PG_OS_USER" >/dev/null 2>&1; }

print_missing() {
    local m
    echo "prereqs: ${1:-missing for \`make $scope\`}:" >&2
    for m in "${missing[@]}"; do echo "  - $m" >&2; done
}

print_manual() {
    local m
    for m in "${manual[@]}"; do echo "prereqs: $m" >&2; done
}

survey

if ((${#missing[@]} == 0 && ${#manual[@]} == 0)); then
    if postgres_user_missing; then
        if ((install)); then
            echo "prereqs: adding the system user '$PG_OS_USER' (Postgres refuses to run as root)"
            useradd --system --home-dir /var/lib/postgresql --shell /bin/bash "$PG_OS_USER"
        else
            echo "prereqs: as root the stack runs Postgres as '$PG_OS_USER', which does not exist:" \
                "useradd --system --home-dir /var/lib/postgresql --shell /bin/bash $PG_OS_USER" >&2
            exit 1
        fi
    fi
    exit 0
fi

((${#missing[@]})) && print_missing

case $os in
    debian | ubuntu)
        if ((${#apt[@]} == 0)); then
            print_manual
            exit 1
        fi
        if ((install)) && [[ $(id -u) -eq 0 ]]; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            mapfile -t pkgs < <(apt_packages)
            echo "prereqs: installing ${pkgs[*]}"
            apt-get install -y -q --no-install-recommends "${pkgs[@]}"
        else
            mapfile -t pkgs < <(apt_packages 2>/dev/null)
            sudo=sudo
            [[ $(id -u) -eq 0 ]] && sudo=""
            echo "prereqs: install them with${sudo:+ (or run this script as root)}:" >&2
            echo "  ${sudo:+sudo }apt-get update && ${sudo:+sudo }apt-get install -y --no-install-recommends ${pkgs[*]}" >&2
            print_manual
            exit 1
        fi
        ;;
    macos)
        echo "prereqs: install them with:" >&2
        ((${#brew[@]})) && echo "  brew install ${brew[*]}" >&2
        ((${#casks[@]})) && echo "  brew install --cask ${casks[*]}" >&2
        [[ " ${brew[*]} " == *" openjdk@17 "* || " ${brew[*]} " == *" postgresql@16 "* ]] &&
            echo "  (Homebrew's openjdk@17 and postgresql@16 are keg-only: put their bin/ on PATH, or set JAVA_HOME and CHANGEFOLD_PG_BIN_DIR)" >&2
        print_manual
        exit 1
        ;;
    *)
        echo "prereqs: this script installs packages on Debian/Ubuntu (apt-get) and tells the" \
            "Homebrew line on macOS; here, install the above with your package manager." >&2
        print_manual
        exit 1
        ;;
esac

# After installing: everything must be there now, or say what still is not.
survey
if ((${#missing[@]} || ${#manual[@]})); then
    print_missing "still missing after apt-get install"
    ((${#manual[@]})) ||
        echo "prereqs: (apt-get installed them, but not where this shell looks: check PATH and the settings above)" >&2
    print_manual
    exit 1
fi
if postgres_user_missing; then
    echo "prereqs: adding the system user '$PG_OS_USER' (Postgres refuses to run as root)"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash "$PG_OS_USER"
fi
echo "prereqs: everything \`make $scope\` needs is installed"
