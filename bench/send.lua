-- wrk script: the seed's email, sent to the case named in the URL.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PARLEY_BENCH_TOKEN")
wrk.body = '{"messageType":"email","to":"debtor@example.com","subject":"Payment Reminder - Invoice INV-2024-001",'
    .. '"body":"Dear customer,\\n\\nThis is a reminder that invoice INV-2024-001 is due.","cc":["creditor@example.com"],"priority":"normal"}'
