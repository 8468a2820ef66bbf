#!/usr/bin/env bash
# shellcheck source=../lib/prelude_config.bash
source "$(dirname "$0")/../lib/prelude_config.bash"
# Passwords stay locked unless the operator asks for one (--set bosh_users_password=...).
bosh_users_password=${bosh_users_password:-}
persist bosh_users_password
