#!/bin/bash
# Installed by logrotate_config; the agent runs it after writing a job's logrotate rules:
# logrotate runs four times an hour, at a minute of its own per VM (firstMinute overrides).
: "${firstMinute:=$((RANDOM % 15))}"
secondMinute=$((firstMinute + 15))
thirdMinute=$((secondMinute + 15))
fourthMinute=$((thirdMinute + 15))

echo "$firstMinute,$secondMinute,$thirdMinute,$fourthMinute * * * * root /usr/bin/logrotate-cron" >/etc/cron.d/logrotate
chmod 0600 /etc/cron.d/logrotate
