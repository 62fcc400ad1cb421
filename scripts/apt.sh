# apt_install WHY PACKAGE...: installs Debian packages (with sudo unless
# root), saying why. Sourced by the scripts that need a package.
apt_install() {
  local why=$1
  shift
  echo "installing $* ($why)" >&2
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}
