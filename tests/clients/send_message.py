"""The seed's SMS example sent with Python's standard library."""

import json
import os
import urllib.request

request = urllib.request.Request(
    f"{os.environ['PARLEY_BASE']}/api/cases/{os.environ['PARLEY_CASE']}/messages",
    method="POST",
    data=json.dumps({
        "messageType": "sms",
        "to": "+4512345678",
        "body": "Payment reminder: Invoice INV-2024-001 due. Please contact us.",
        "priority": "high",
    }).encode(),
    headers={"Authorization": f"Bearer {os.environ['PARLEY_TOKEN']}", "Content-Type": "application/json"},
)
with urllib.request.urlopen(request) as response:
    print(json.dumps({"status": response.status, "body": json.load(response)}))
