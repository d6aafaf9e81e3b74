#!/usr/bin/env bash
# The production-breaking edits an outside review found passing every test (and a few more), each applied
# to a fresh clone of HEAD (commit first), then the platform tests: each must be KILLED.
#   tests/platform/review_edits.sh            TESTS=tests/platform/test_scaling_simulation.py tests/platform/review_edits.sh
set -u
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
PY=$ROOT/.venv/bin/python
edits=(
  "health check retries 30|platform/mlw_service.py|s/\"retries\": 3,/\"retries\": 30,/"
  "health check start period 900|platform/mlw_service.py|s/\"startPeriod\": 180,/\"startPeriod\": 900,/"
  "scale-in missing data notBreaching|platform/mlw_scaling_rules.py|s/\"TreatMissingData\": \"breaching\"/\"TreatMissingData\": \"notBreaching\"/"
  "3600 s cooldown|platform/mlw_scaling_rules.py|s/\nCOOLDOWN_SECONDS = 60\n/\nCOOLDOWN_SECONDS = 3600\n/"
  "stat Maximum -> Minimum|platform/mlw_scaling_rules.py|s/\"Stat\": \"Maximum\"/\"Stat\": \"Minimum\"/"
  "step aggregation Maximum -> Average|platform/mlw_scaling_rules.py|s/\"MetricAggregationType\": \"Maximum\"/\"MetricAggregationType\": \"Average\"/"
  "DLQ alarm period 300|platform/mlw_alarms.py|s/\nPERIOD_SECONDS = 60\n/\nPERIOD_SECONDS = 300\n/"
  "OK actions removed|platform/mlw_alarms.py|s/                ok_actions=actions,//"
  "FILL removed from the depth terms|platform/mlw_scaling_rules.py|s/terms.append(f\"FILL({query_id}, 0)\")/terms.append(query_id)/"
  "DLQ alarm on visible only|platform/mlw_alarms.py|s/expression(\"SUM(\[FILL(visible, 0), FILL(inflight, 0)\])\"/expression(\"FILL(visible, 0)\"/"
  "scale-out window 1 minute|platform/mlw_scaling_rules.py|s/\"EvaluationPeriods\": window,\n            \"DatapointsToAlarm\": 1,/\"EvaluationPeriods\": 1,\n            \"DatapointsToAlarm\": 1,/"
  "batch size 10|platform/mlw_config.py|s/return min(self.sqs_max_batch, self.target_queue_depth)/return self.sqs_max_batch/"
  "queues not after the redrive-allow policy|platform/mlw_queues.py|s/opts=stateful(self, depends_on=\[allow\]),/opts=stateful(self),/"
  "log group unprotected|platform/mlw_service.py|s/retention_in_days=cfg.log_retention_days, opts=stateful(self),/retention_in_days=cfg.log_retention_days, opts=child,/"
)
for spec in "${edits[@]}"; do
  IFS='|' read -r what file expr <<< "$spec"
  dir=$(mktemp -d)
  git clone -q "$ROOT" "$dir"
  before=$(sha1sum "$dir/$file" | cut -c1-40)
  sed -i -z "$expr" "$dir/$file" 2>/dev/null || sed -i "$expr" "$dir/$file"
  after=$(sha1sum "$dir/$file" | cut -c1-40)
  if [ "$before" = "$after" ]; then echo "NOT APPLIED: $what"; rm -rf "$dir"; continue; fi
  out=$(cd "$dir" && $PY -m pytest -x -q -p no:cacheprovider -m 'not slow' ${TESTS:-tests/platform} 2>&1 | tail -3)
  if echo "$out" | grep -q "failed\|error"; then
    echo "KILLED: $what -- $(echo "$out" | grep -m1 -E "FAILED|ERROR|error" | cut -c1-150)"
  else
    echo "SURVIVED: $what"
  fi
  rm -rf "$dir"
done
