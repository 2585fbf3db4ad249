"""The seed's flow through a client generated from parley's own OpenAPI document by
openapi-python-client: typed requests in, typed answers out. Prints what each step answered
as JSON, with the class each answer was parsed into.

Environment: PARLEY_BASE (the server's root), PARLEY_TOKEN (a creditor's token),
PARLEY_WORK (an empty folder for the document and the generated package).
"""

import importlib
import json
import os
import pathlib
import subprocess
import sys
import urllib.request

base = os.environ["PARLEY_BASE"]
work = pathlib.Path(os.environ["PARLEY_WORK"])
spec = work / "openapi.json"
with urllib.request.urlopen(f"{base}/openapi.json") as response:
    spec.write_bytes(response.read())
generated = subprocess.run(
    ["openapi-python-client", "generate", "--path", str(spec), "--meta", "none",
     "--output-path", str(work / "parley_client")],
    capture_output=True, text=True,
)
if generated.returncode != 0:
    sys.exit(f"openapi-python-client failed:\n{generated.stdout}\n{generated.stderr}")
sys.path.insert(0, str(work))

client_module = importlib.import_module("parley_client")
models = importlib.import_module("parley_client.models")
types = importlib.import_module("parley_client.types")


def api(group, operation):
    return importlib.import_module(f"parley_client.api.{group}.{operation}")


client = client_module.AuthenticatedClient(base_url=base, token=os.environ["PARLEY_TOKEN"])
steps = []


def step(name, response, expected_status):
    """Records one answer: its status and the class it was parsed into."""
    parsed = response.parsed
    steps.append({
        "step": name,
        "status": int(response.status_code),
        "parsed": type(parsed).__name__,
    })
    if int(response.status_code) != expected_status:
        sys.exit(f"{name}: {response.status_code} {response.content!r}")
    return parsed


case = step("createCase", api("cases", "create_case").sync_detailed(client=client, body=models.CreateCaseRequest(
    case_number="DEB-2024-00042",
    debtor=models.DebtorInput(name="Example Company ApS", email="debtor@example.com",
                              phone="+4512345678", language="da",
                              timezone=models.TimeZone.EUROPE_COPENHAGEN),
    amount=models.AmountInput(value="15000.00", currency="DKK"),
    invoice_number="INV-2024-001",
)), 201)
case_id = case.case_id

step("getCase", api("cases", "get_case").sync_detailed(case_id, client=client), 200)
templates = step("listTemplates", api("templates", "list_templates").sync_detailed(client=client), 200)

email = step("sendMessage email", api("messages", "send_message").sync_detailed(case_id, client=client, body=models.SendMessageRequest(
    message_type=models.SendMessageRequestMessageType.EMAIL,
    to="debtor@example.com",
    subject="Payment Reminder - Invoice INV-2024-001",
    body="Dear customer,\n\nThis is a reminder...",
    cc=["creditor@example.com"],
    priority=models.SendMessageRequestPriorityType1.NORMAL,
    template_id="payment-reminder-v1",
)), 201)
sms = step("sendMessage sms", api("messages", "send_message").sync_detailed(case_id, client=client, body=models.SendMessageRequest(
    message_type=models.SendMessageRequestMessageType.SMS,
    to="+4512345678",
    body="Payment reminder: Invoice INV-2024-001 due. Please contact us.",
    priority=models.SendMessageRequestPriorityType1.HIGH,
)), 201)

listed = step("listMessages", api("messages", "list_messages").sync_detailed(
    case_id, client=client, type_=models.ListMessagesType.EMAIL,
    direction=models.ListMessagesDirection.OUTBOUND), 200)
one = step("getMessage", api("messages", "get_message").sync_detailed(email.message_id, client=client), 200)
report = step("getDeliveryReport", api("messages", "get_delivery_report").sync_detailed(email.message_id, client=client), 200)

upload = step("uploadDocument", api("documents", "upload_document").sync_detailed(case_id, client=client, body=models.UploadForm(
    document_type=models.UploadFormDocumentType.INVOICE,
    file=types.File(payload=b"%PDF-1.4 invoice", file_name="invoice.pdf", mime_type="application/pdf"),
)), 201)
documents = step("listDocuments", api("documents", "list_documents").sync_detailed(case_id, client=client), 200)
download = api("documents", "download_document").sync_detailed(upload.document_id, client=client)
steps.append({"step": "downloadDocument", "status": int(download.status_code), "parsed": "bytes"})

threads = step("listThreads", api("threads", "list_threads").sync_detailed(case_id, client=client), 200)
thread = step("listThreadMessages", api("threads", "list_thread_messages").sync_detailed(
    threads.threads[0].thread_id, client=client), 200)

preferences = step("putPreferences", api("preferences", "put_preferences").sync_detailed(case_id, client=client, body=models.PreferencesRequest(
    preferred_channel=models.PreferencesRequestPreferredChannelType1.EMAIL,
    allow_sms=False,
    contact_hours=models.ContactHours(start="09:00", end="17:00",
                                      timezone=models.TimeZone.EUROPE_COPENHAGEN),
)), 200)

print(json.dumps({
    "steps": steps,
    "caseId": str(case_id),
    "caseStatus": case.status,
    "templates": [t.template_id for t in templates.templates],
    "email": {"messageId": email.message_id, "status": str(email.status), "to": email.to, "cc": email.cc},
    "sms": {"messageId": sms.message_id, "status": str(sms.status)},
    "listed": {"totalCount": listed.total_count, "ids": [m.message_id for m in listed.messages]},
    "message": {"subject": one.subject, "body": one.body},
    "report": {"messageId": report.message_id, "events": [e.event for e in report.events]},
    "document": {"documentId": upload.document_id, "fileName": upload.file_name,
                 "listed": [d.document_id for d in documents.documents],
                 "downloaded": download.content.decode()},
    "thread": {"threadId": thread.thread_id, "messages": [m.message_id for m in thread.messages]},
    "preferences": {"allowSms": preferences.allow_sms,
                    "preferredChannel": str(preferences.preferred_channel),
                    "timezone": str(preferences.contact_hours.timezone)},
}))
