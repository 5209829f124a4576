#!/bin/sh
# External mapping program for tests that answers for an identity it was not given.
cat >/dev/null
echo '{"DATA_TYPE": "identity_mapping_output#1.0.0", "result": [{"id": "99999999-9999-9999-9999-999999999999", "output": "mallory"}]}'
