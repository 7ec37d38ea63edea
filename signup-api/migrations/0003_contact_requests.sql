-- Contacts become requests that the other side accepts. A request is kept by the email it
-- was sent to, whether or not an account has that email, so nothing a sender can observe
-- (the answer, the pending count, the cap) tells whether the email is registered.
CREATE TABLE IF NOT EXISTS contact_requests (
    from_id TEXT NOT NULL REFERENCES accounts(id),
    to_email TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (from_id, to_email)
);
CREATE INDEX IF NOT EXISTS contact_requests_to ON contact_requests(to_email);
-- An accepted pair is two rows in contacts, one per direction. Contacts added one-sidedly
-- before requests existed become pending requests; pairs who had added each other stay.
INSERT INTO contact_requests (from_id, to_email, created_at)
SELECT c.owner_id, a.email, c.created_at
FROM contacts c JOIN accounts a ON a.id = c.contact_id
WHERE NOT EXISTS (
    SELECT 1 FROM contacts r WHERE r.owner_id = c.contact_id AND r.contact_id = c.owner_id
);
DELETE FROM contacts
WHERE NOT EXISTS (
    SELECT 1 FROM contacts r
    WHERE r.owner_id = contacts.contact_id AND r.contact_id = contacts.owner_id
);
