-- System messages: a message of type 'system' names its event, the delivery channel when it
-- goes to the debtor, and the event it answers (one message per event).
ALTER TABLE messages ADD COLUMN channel TEXT;
ALTER TABLE messages ADD COLUMN system_event TEXT;
ALTER TABLE messages ADD COLUMN system_key TEXT;
CREATE UNIQUE INDEX messages_system_key ON messages (system_key);

-- Evidence: the last send-policy decision on a message.
ALTER TABLE messages ADD COLUMN policy_decision TEXT;
ALTER TABLE messages ADD COLUMN policy_rule TEXT;
ALTER TABLE messages ADD COLUMN policy_checked_at BIGINT;

-- Attachments: the case documents an outbound email carries, and the documents an inbound
-- email brought, in order (the table of the first schema was never written to).
DROP TABLE message_attachments;
CREATE TABLE message_attachments (
    message_id   TEXT NOT NULL REFERENCES messages (id),
    ordinal      INTEGER NOT NULL,
    document_id  TEXT NOT NULL REFERENCES documents (id),
    PRIMARY KEY (message_id, ordinal)
);
CREATE INDEX message_attachments_document ON message_attachments (document_id);

-- The system templates, in English and Danish; editable like any other.
INSERT INTO templates (id, name, channel, default_language, owner_party_id, created_at, updated_at) VALUES
    ('system-case.status_changed', 'System: case status changed', 'email', 'en', NULL, 11, 11),
    ('system-payment.received', 'System: payment received', 'email', 'en', NULL, 12, 12),
    ('system-document.uploaded', 'System: document uploaded', 'email', 'en', NULL, 13, 13),
    ('system-deadline.approaching', 'System: deadline approaching', 'email', 'en', NULL, 14, 14);

INSERT INTO template_contents (template_id, language, subject, body, html_body) VALUES
    ('system-case.status_changed', 'en', 'Case {{caseNumber}}: status changed to {{status}}',
     'Case {{caseNumber}}

Dear {{debtorName}},

the status of your case has changed from {{previousStatus}} to {{status}}.

Kind regards', NULL),
    ('system-case.status_changed', 'da', 'Sag {{caseNumber}}: status ændret til {{status}}',
     'Sag {{caseNumber}}

Kære {{debtorName}},

status på din sag er ændret fra {{previousStatus}} til {{status}}.

Med venlig hilsen', NULL),
    ('system-payment.received', 'en', 'Payment received - {{caseNumber}}',
     'Case {{caseNumber}}

Dear {{debtorName}},

we have received your payment of {{paymentAmount}}. The amount still outstanding is {{amountOutstanding}}.

Thank you, and kind regards', NULL),
    ('system-payment.received', 'da', 'Betaling modtaget - {{caseNumber}}',
     'Sag {{caseNumber}}

Kære {{debtorName}},

vi har modtaget din betaling på {{paymentAmount}}. Det resterende beløb er {{amountOutstanding}}.

Tak, og med venlig hilsen', NULL),
    ('system-document.uploaded', 'en', 'Document added - {{caseNumber}}',
     'Case {{caseNumber}}

A document was added to the case: {{fileName}} ({{documentType}}).', NULL),
    ('system-document.uploaded', 'da', 'Dokument tilføjet - {{caseNumber}}',
     'Sag {{caseNumber}}

Et dokument er tilføjet sagen: {{fileName}} ({{documentType}}).', NULL),
    ('system-deadline.approaching', 'en', 'Deadline approaching - {{caseNumber}}',
     'Case {{caseNumber}}

Dear {{debtorName}},

the deadline "{{deadlineTitle}}" falls due on {{deadlineDueAt}}. Please act before then, or reply to this message to agree on a solution.

Kind regards', NULL),
    ('system-deadline.approaching', 'da', 'Frist nærmer sig - {{caseNumber}}',
     'Sag {{caseNumber}}

Kære {{debtorName}},

fristen "{{deadlineTitle}}" udløber den {{deadlineDueAt}}. Handl venligst inden da, eller svar på denne besked for at aftale en løsning.

Med venlig hilsen', NULL);
