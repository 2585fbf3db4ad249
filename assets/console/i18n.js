// The console's words in English and Danish; the choice is kept in local storage.

const words = {
  en: {
    skip: 'Skip to content',
    signIn: 'Sign in', signOut: 'Sign out', token: 'API token',
    tokenHelp: 'A token made with “parley token create”. It is kept in this tab only.',
    language: 'Language', switchLanguage: 'Dansk',
    cases: 'Cases', unmatched: 'Unmatched mail', deliveries: 'Deliveries', webhooks: 'Webhooks',
    suppressions: 'Suppressions',
    search: 'Search', searchHelp: 'Case number (or its start), debtor email or phone',
    status: 'Status', any: 'Any', caseNumber: 'Case number', debtor: 'Debtor',
    outstanding: 'Outstanding', amount: 'Amount', paid: 'Paid', more: 'Load more', noneFound: 'Nothing found.', casesFound: '{n} cases found',
    'status.open': 'Open', 'status.payment_plan': 'Payment plan', 'status.disputed': 'Disputed',
    'status.paid': 'Paid', 'status.closed': 'Closed',
    conversation: 'Conversation', threads: 'Threads', oneMessage: '1 message', manyMessages: '{n} messages', noThreads: 'No messages yet.',
    inbound: 'Received', outbound: 'Sent', system: 'System', from: 'From', to: 'To',
    timeline: 'Delivery timeline', hideTimeline: 'Hide timeline', policy: 'Send policy',
    compose: 'Compose', channel: 'Channel', email: 'Email', sms: 'SMS', template: 'Template',
    noTemplate: 'No template', variables: 'Template variables', subject: 'Subject', body: 'Message',
    attachments: 'Attachments', noDocuments: 'No documents on this case.',
    preview: 'Preview', send: 'Send', previewTitle: 'Preview (rendered by the server)',
    scheduledFor: 'Goes out at', queued: 'Queued: {id}',
    documents: 'Documents', upload: 'Upload', file: 'File', documentType: 'Document type',
    download: 'Download', uploaded: 'Uploaded {name}',
    notes: 'Notes', note: 'Note', addNote: 'Add note', category: 'Category',
    payments: 'Payments', recordPayment: 'Record payment', paidAt: 'Paid at',
    deadlines: 'Deadlines', title: 'Title', dueAt: 'Due', addDeadline: 'Add deadline',
    preferences: 'Preferences', allowEmail: 'Email allowed', allowSms: 'SMS allowed',
    doNotContact: 'Do not contact', preferredChannel: 'Preferred channel', save: 'Save', saved: 'Saved',
    lift: 'Lift', lifted: 'Lifted', reason: 'Reason', address: 'Address', created: 'Created',
    appliesTo: 'Applies to', everyone: 'Every creditor', creditorOnly: 'Only creditor',
    changeStatus: 'Change status', newMail: 'New message received',
    assignTo: 'Case number to assign to', assign: 'Assign', assigned: 'Assigned to {n}',
    source: 'Source', received: 'Received',
    'state.failed': 'Failed', 'state.scheduled': 'Scheduled', 'state.retrying': 'Retrying', 'state.queued': 'Queued',
    runAt: 'Runs at', attempts: 'Attempts', lastError: 'Last error', retry: 'Retry', cancel: 'Cancel',
    awaitingReview: 'Awaiting review', awaitingReviewHelp: 'Its sender is not proven to be someone this case knows (only a case number links it, its domain\'s DMARC failed, or the spam filter flagged it). Nothing acts on it until you accept it.',
    senderCheck: 'Sender check', fromVerified: 'sender domain proven', fromUnverified: 'sender domain not proven', spam: 'Spam', spamUnchecked: 'spam filter did not answer',
    accept: 'Accept', reject: 'Reject', accepted: 'Accepted', rejected: 'Rejected: back in the unmatched inbox',
    events: 'Events', url: 'URL', resend: 'Resend', resent: 'Sent again',
    noItems: 'Nothing here.', loading: 'Loading…', notFound: 'Not found.',
    caseNotFound: 'No case with that number.', type: 'Type', message: 'Message', case: 'Case',
    sender: 'Sender', senderHelp: 'An address or number; case does not matter.', filter: 'Filter',
    dismiss: 'Dismiss', dismissAll: 'Dismiss all from this sender', dismissAllNeedsSender: 'Name the sender whose mail to dismiss.',
    dismissed: '{n} dismissed', unmatchedCount: '{n} waiting',
    connectors: 'Connectors', name: 'Name', creditorId: 'Creditor', creditorIdHelp: 'A creditor party id: the connector serves that creditor\'s cases only. Empty: every case.',
    'connector.microsoft365_mail': 'Microsoft 365 mailbox', 'connector.gmail': 'Gmail mailbox',
    'setting.tenantId': 'Tenant (directory) id', 'setting.clientId': 'Application (client) id', 'setting.clientSecret': 'Client secret',
    'setting.mailbox': 'Mailbox', 'setting.graphUrl': 'Graph URL', 'setting.loginUrl': 'Sign-in URL', 'setting.outbound': 'Send the cases\' mail through this mailbox',
    'setting.serviceAccount': 'Service account key (JSON)', 'setting.user': 'Mailbox', 'setting.apiUrl': 'Gmail API URL',
    'connector.archive': 'Mail archive', 'setting.target': 'Journal to', 'setting.url': 'Server URL (imap[s]://user:pass@host/Mailbox or smtp[s]://…)',
    'setting.journalAddress': 'Journal address (smtp)', 'target.imap': 'an IMAP mailbox', 'target.smtp': 'an SMTP journal address',
    'target.documents': 'the case\'s documents', 'export.mbox': 'Export (MBOX)', 'export.eml': 'Export (.eml files, ZIP)',
    secretKept: 'Left empty, the secret stays as it is.', urlDefault: 'Empty: the public service.',
    addConnector: 'Add connector', connectorAdded: 'Added {name}', lastSync: 'Last sync', items: 'Items', syncs: 'Syncs / failures',
    carriedBy: 'via {mailbox}',
    syncNow: 'Sync now', syncAsked: 'Sync asked for', delete: 'Delete', reauthorize: 'Settings and credentials', saveAndRetry: 'Save and try again',
  },
  da: {
    skip: 'Gå til indhold',
    signIn: 'Log ind', signOut: 'Log ud', token: 'API-nøgle',
    tokenHelp: 'En nøgle lavet med “parley token create”. Den gemmes kun i denne fane.',
    language: 'Sprog', switchLanguage: 'English',
    cases: 'Sager', unmatched: 'Uplaceret post', deliveries: 'Forsendelser', webhooks: 'Webhooks',
    suppressions: 'Spærringer',
    search: 'Søg', searchHelp: 'Sagsnummer (eller begyndelsen), skyldners e-mail eller telefon',
    status: 'Status', any: 'Alle', caseNumber: 'Sagsnummer', debtor: 'Skyldner',
    outstanding: 'Udestående', amount: 'Beløb', paid: 'Betalt', more: 'Vis flere', noneFound: 'Intet fundet.', casesFound: '{n} sager fundet',
    'status.open': 'Åben', 'status.payment_plan': 'Afdragsordning', 'status.disputed': 'Bestridt',
    'status.paid': 'Betalt', 'status.closed': 'Lukket',
    conversation: 'Korrespondance', threads: 'Tråde', oneMessage: '1 besked', manyMessages: '{n} beskeder', noThreads: 'Ingen beskeder endnu.',
    inbound: 'Modtaget', outbound: 'Sendt', system: 'System', from: 'Fra', to: 'Til',
    timeline: 'Leveringsforløb', hideTimeline: 'Skjul forløb', policy: 'Afsendelsesregel',
    compose: 'Skriv', channel: 'Kanal', email: 'E-mail', sms: 'SMS', template: 'Skabelon',
    noTemplate: 'Ingen skabelon', variables: 'Skabelonens felter', subject: 'Emne', body: 'Besked',
    attachments: 'Vedhæftninger', noDocuments: 'Ingen dokumenter på sagen.',
    preview: 'Forhåndsvis', send: 'Send', previewTitle: 'Forhåndsvisning (dannet af serveren)',
    scheduledFor: 'Sendes', queued: 'I kø: {id}',
    documents: 'Dokumenter', upload: 'Upload', file: 'Fil', documentType: 'Dokumenttype',
    download: 'Hent', uploaded: '{name} er uploadet',
    notes: 'Noter', note: 'Note', addNote: 'Tilføj note', category: 'Kategori',
    payments: 'Betalinger', recordPayment: 'Registrér betaling', paidAt: 'Betalt',
    deadlines: 'Frister', title: 'Titel', dueAt: 'Forfald', addDeadline: 'Tilføj frist',
    preferences: 'Præferencer', allowEmail: 'E-mail tilladt', allowSms: 'SMS tilladt',
    doNotContact: 'Må ikke kontaktes', preferredChannel: 'Foretrukken kanal', save: 'Gem', saved: 'Gemt',
    lift: 'Ophæv', lifted: 'Ophævet', reason: 'Årsag', address: 'Adresse', created: 'Oprettet',
    appliesTo: 'Gælder for', everyone: 'Alle kreditorer', creditorOnly: 'Kun kreditor',
    changeStatus: 'Skift status', newMail: 'Ny besked modtaget',
    assignTo: 'Sagsnummer at placere på', assign: 'Placér', assigned: 'Placeret på {n}',
    source: 'Kilde', received: 'Modtaget',
    'state.failed': 'Fejlet', 'state.scheduled': 'Planlagt', 'state.retrying': 'Forsøges igen', 'state.queued': 'I kø',
    runAt: 'Kører', attempts: 'Forsøg', lastError: 'Seneste fejl', retry: 'Prøv igen', cancel: 'Annullér',
    awaitingReview: 'Afventer gennemsyn', awaitingReviewHelp: 'Det er ikke bevist, at afsenderen er en, sagen kender (kun et sagsnummer knytter mailen til sagen, domænets DMARC fejlede, eller spamfilteret markerede den). Intet sker med den, før du godkender den.',
    senderCheck: 'Afsendertjek', fromVerified: 'afsenderdomæne bevist', fromUnverified: 'afsenderdomæne ikke bevist', spam: 'Spam', spamUnchecked: 'spamfilteret svarede ikke',
    accept: 'Godkend', reject: 'Afvis', accepted: 'Godkendt', rejected: 'Afvist: tilbage i indbakken for ukendte',
    events: 'Hændelser', url: 'URL', resend: 'Send igen', resent: 'Sendt igen',
    noItems: 'Her er intet.', loading: 'Henter…', notFound: 'Findes ikke.',
    caseNotFound: 'Ingen sag med det nummer.', type: 'Type', message: 'Besked', case: 'Sag',
    sender: 'Afsender', senderHelp: 'En adresse eller et nummer; store og små bogstaver er ligegyldige.', filter: 'Filtrér',
    dismiss: 'Afvis', dismissAll: 'Afvis alt fra denne afsender', dismissAllNeedsSender: 'Angiv afsenderen, hvis post skal afvises.',
    dismissed: '{n} afvist', unmatchedCount: '{n} venter',
    connectors: 'Forbindelser', name: 'Navn', creditorId: 'Kreditor', creditorIdHelp: 'En kreditors part-id: forbindelsen betjener kun den kreditors sager. Tom: alle sager.',
    'connector.microsoft365_mail': 'Microsoft 365-postkasse', 'connector.gmail': 'Gmail-postkasse',
    'setting.tenantId': 'Lejer-id (directory)', 'setting.clientId': 'Program-id (client)', 'setting.clientSecret': 'Klienthemmelighed',
    'setting.mailbox': 'Postkasse', 'setting.graphUrl': 'Graph-URL', 'setting.loginUrl': 'Login-URL', 'setting.outbound': 'Send sagernes post gennem denne postkasse',
    'setting.serviceAccount': 'Tjenestekontoens nøgle (JSON)', 'setting.user': 'Postkasse', 'setting.apiUrl': 'Gmail API-URL',
    'connector.archive': 'Postarkiv', 'setting.target': 'Journalisér til', 'setting.url': 'Server-URL (imap[s]://bruger:kode@vært/Postkasse eller smtp[s]://…)',
    'setting.journalAddress': 'Journaladresse (smtp)', 'target.imap': 'en IMAP-postkasse', 'target.smtp': 'en SMTP-journaladresse',
    'target.documents': 'sagens dokumenter', 'export.mbox': 'Eksportér (MBOX)', 'export.eml': 'Eksportér (.eml-filer, ZIP)',
    secretKept: 'Tom: hemmeligheden forbliver, som den er.', urlDefault: 'Tom: den offentlige tjeneste.',
    addConnector: 'Tilføj forbindelse', connectorAdded: '{name} er tilføjet', lastSync: 'Seneste synkronisering', items: 'Emner', syncs: 'Synkroniseringer / fejl',
    carriedBy: 'via {mailbox}',
    syncNow: 'Synkronisér nu', syncAsked: 'Synkronisering bestilt', delete: 'Slet', reauthorize: 'Indstillinger og adgang', saveAndRetry: 'Gem og prøv igen',
  },
};

let current = localStorage.getItem('parley.lang')
  || ((navigator.language || 'en').toLowerCase().startsWith('da') ? 'da' : 'en');

export function lang() { return current; }

export function setLang(l) {
  current = words[l] ? l : 'en';
  localStorage.setItem('parley.lang', current);
  document.documentElement.lang = current;
}

export function t(key, vars = {}) {
  const s = words[current][key] ?? words.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}

export function when(iso) {
  if (!iso) return '';
  return new Date(iso).toLocaleString(current === 'da' ? 'da-DK' : 'en-GB', {
    dateStyle: 'medium', timeStyle: 'short',
  });
}
