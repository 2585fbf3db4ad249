-- The templates every new installation starts with, in English and Danish.

INSERT INTO templates (id, name, channel, default_language, owner_party_id, created_at, updated_at) VALUES
    ('payment-reminder-v1', 'Standard Payment Reminder', 'email', 'en', NULL, 1, 1),
    ('first-notice', 'First Collection Notice', 'email', 'en', NULL, 2, 2),
    ('payment-reminder-sms', 'Payment Reminder SMS', 'sms', 'en', NULL, 3, 3);

INSERT INTO template_contents (template_id, language, subject, body, html_body) VALUES
    ('payment-reminder-v1', 'en', 'Payment Reminder - Invoice {{invoiceNumber}}',
     'Invoice {{invoiceNumber}}: {{amount}}, due on {{dueDate}}.

Dear {{debtorName}},

our records show that the amount above has not been paid yet. Please pay it within 8 days. If you have already paid, or would like to agree on a payment plan, simply reply to this email.

Kind regards', NULL),
    ('payment-reminder-v1', 'da', 'Betalingspåmindelse - Faktura {{invoiceNumber}}',
     'Faktura {{invoiceNumber}}: {{amount}}, forfalden den {{dueDate}}.

Kære {{debtorName}},

vi har endnu ikke modtaget betaling af beløbet ovenfor. Betal venligst inden 8 dage. Har du allerede betalt, eller ønsker du at aftale en afdragsordning, så svar blot på denne e-mail.

Med venlig hilsen', NULL),
    ('first-notice', 'en', 'Collection Notice - {{caseNumber}}',
     'Case {{caseNumber}}

Your outstanding amount of {{amount}} has been handed over for collection. To avoid further costs, please pay the full amount no later than {{deadline}}, or reply to this email to agree on a solution.

Kind regards', NULL),
    ('first-notice', 'da', 'Inkassovarsel - {{caseNumber}}',
     'Sag {{caseNumber}}

Dit udestående beløb på {{amount}} er overgivet til inkasso. Betal hele beløbet senest {{deadline}} for at undgå yderligere omkostninger, eller svar på denne e-mail for at aftale en løsning.

Med venlig hilsen', NULL),
    ('payment-reminder-sms', 'en', NULL,
     'Payment reminder: invoice {{invoiceNumber}} of {{amount}} is due. Please pay or contact us.', NULL),
    ('payment-reminder-sms', 'da', NULL,
     'Betalingspåmindelse: faktura {{invoiceNumber}} på {{amount}} er forfalden. Betal venligst eller kontakt os.', NULL);
