// The seed's Node.js example, as written there, against a local parley.
const accessToken = process.env.PARLEY_TOKEN;
const base = process.env.PARLEY_BASE;

// Send email message
async function sendMessage(caseId, messageData) {
  const response = await fetch(
    `${base}/api/cases/${caseId}/messages`,
    {
      method: 'POST',
      headers: {
        'Authorization': `Bearer ${accessToken}`,
        'Content-Type': 'application/json'
      },
      body: JSON.stringify(messageData)
    }
  );

  return response.json();
}

const result = await sendMessage(process.env.PARLEY_CASE, {
  messageType: "email",
  to: "debtor@example.com",
  subject: "Payment Reminder - Invoice INV-2024-001",
  body: "Dear customer,\n\nThis is a reminder...",
  cc: ["creditor@example.com"],
  priority: "normal",
  templateId: "payment-reminder-v1"
});
console.log(JSON.stringify(result));
