// node sign_in.mjs GATEWAY_URL REQUEST_ID SUBJECT REVOKE_SUBJECT
//
// An approver signs in to the approvals page through the identity provider (authorization code
// with PKCE, in a real headless Chromium), finds the request for access REQUEST_ID, checks the
// session cookie's attributes and that a change without the page's CSRF header is refused,
// approves the request, sees it among the decisions of the last day, revokes REVOKE_SUBJECT
// from the page, and signs out. Exit code 0 when everything behaved as expected.
import { chromium } from "playwright-core";

const [base, id, subject, revokeSubject] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(base + "/approvals");
  // With a provider configured, nobody is asked to paste a token.
  await page.locator("#sign-in a").waitFor({ timeout: 10000 });
  if (await page.locator("#login").isVisible()) throw new Error("the token form is shown");
  await page.click("#sign-in a");
  // Off to the provider and back, then on to the queue.
  await page.locator("#who").filter({ hasText: subject }).waitFor({ timeout: 15000 });

  const cookies = await context.cookies(base);
  const session = cookies.find((c) => c.name === "__Host-sluice_session");
  if (!session) throw new Error("no session cookie: " + JSON.stringify(cookies));
  if (!session.httpOnly || !session.secure || session.sameSite !== "Strict") {
    throw new Error("session cookie attributes: " + JSON.stringify(session));
  }
  if (await page.evaluate(() => document.cookie.includes("sluice_session"))) {
    throw new Error("the page's script can read the session cookie");
  }

  const row = page.locator(`#pending tr[data-id="${id}"]`);
  await row.waitFor({ timeout: 10000 });
  const what = await row.locator("td").nth(2).textContent();
  if (!what.includes("access:") || !what.includes("because:")) throw new Error("the row: " + what);
  console.log("listed:", what);

  // A change that does not carry the page's CSRF token is refused, whatever cookies it has.
  const forged = await page.evaluate(async (request) => {
    const response = await fetch(`/v1/approvals/${request}/deny`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
    return response.status;
  }, id);
  if (forged !== 403) throw new Error("a change without the CSRF header answered " + forged);

  await row.locator(".reason").fill("signed in and approved");
  await row.locator("button.approve").click();
  await page.locator("#notice").filter({ hasText: id }).waitFor({ timeout: 10000 });
  await row.waitFor({ state: "detached", timeout: 10000 });
  const decided = page.locator(`#recent tr[data-id="${id}"]`);
  await decided.filter({ hasText: "approved" }).waitFor({ timeout: 10000 });
  console.log("decided:", await decided.textContent());

  await page.fill("#revoke-value", revokeSubject);
  await page.fill("#revoke-reason", "revoked from the page");
  await page.click("#revoke button");
  await page.locator("#notice").filter({ hasText: "revoked: rev-" }).waitFor({ timeout: 10000 });
  console.log("revoked:", await page.locator("#notice").textContent());

  await page.click("#sign-out");
  await page.locator("#sign-in a").waitFor({ timeout: 10000 });
  const after = await page.evaluate(async () => (await fetch("/v1/session")).status);
  if (after !== 401) throw new Error("still signed in after signing out: " + after);
} finally {
  await browser.close();
}
