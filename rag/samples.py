"""A small handbook of a fictional company, written for the demo and the tests.

Fjordlight Robotics builds warehouse robots. Its handbook has a public part and parts only
some groups may read (engineering, people-ops, sales), so access control shows up in every
answer. The text is our own; nothing is copied from any real handbook.
"""

from __future__ import annotations

from pathlib import Path

# folder → (groups that may read it, {relative path: content})
HANDBOOK: dict[str, tuple[list[str], dict[str, str]]] = {
    "public": (
        ["public"],
        {
            "welcome.md": """# Welcome to Fjordlight Robotics

Fjordlight Robotics builds autonomous robots that move pallets in cold-storage warehouses.
We were founded in Bergen in 2019 and now have offices in Bergen, Rotterdam and Austin.

## Working hours

Core collaboration hours are 10:00 to 15:00 Central European Time. Outside those hours
everyone plans their own day. Meetings are not scheduled on Wednesday afternoons, which
are reserved for focused work.

## Our values

We ship small changes often, we write things down, and we measure before we argue.
""",
            "benefits/time-off.md": """# Time off

## Vacation

Every employee receives 27 days of paid vacation per calendar year. Up to 5 unused days
can be carried over into the first quarter of the next year; the rest expire on 31 December.
Request vacation in the HR portal at least two weeks ahead for absences longer than three days.

## Sick leave

Sick leave is not capped. Tell your manager on the first day of illness, and provide a
doctor's note when you are absent for more than eight consecutive calendar days.

## Parental leave

Parents receive 20 weeks of fully paid parental leave, which can be taken within 18 months
of the birth or adoption.
""",
            "expenses.md": """# Expenses and travel

Book all business travel through TripDesk, our travel tool, so that flights and hotels are
covered by the company insurance. Economy class is the default for flights under six hours.

## Meals

The daily meal allowance while travelling is 40 euros. Alcohol is never reimbursed.

## Receipts

Upload receipts to the expense tool within 30 days of the purchase. Expenses submitted
later than 90 days after the purchase are not reimbursed.
""",
            "it/laptops.html": """<html><head><title>Laptops and equipment</title></head><body>
<h1>Laptops and equipment</h1>
<p>New employees choose between a 14-inch and a 16-inch laptop on their first day.
Laptops are replaced every three years, or earlier when they fail.</p>
<p>Lost or stolen equipment must be reported to the IT helpdesk within 24 hours so that
the device can be wiped remotely.</p>
</body></html>
""",
        },
    ),
    "engineering": (
        ["engineering"],
        {
            "on-call.md": """# On-call

## Rotation

The on-call rotation changes every Monday at 10:00 CET. Each engineer is on call for one
week at a time, at most once every six weeks.

## Escalation

If the primary on-call engineer does not acknowledge a page within 15 minutes, the page
escalates to the secondary engineer, and after 30 minutes to the engineering manager.

## Severity levels

A SEV1 incident stops robots in a customer warehouse and needs a status update every
30 minutes. A SEV2 incident degrades service, and a SEV3 incident has a workaround.
""",
            "releases.md": """# Releases

The fleet software ships on a release train every Tuesday and Thursday. There is a deploy
freeze on Fridays after 14:00 and during the last week of December.

A release needs two approving code reviews and a green simulation run of the warehouse
digital twin before it may reach customer sites.
""",
        },
    ),
    "people-ops": (
        ["people-ops"],
        {
            "compensation.md": """# Compensation reviews

Salary bands are reviewed once a year, in March. Band changes take effect on 1 April.
The engineering band L3 ranges from 62,000 to 78,000 euros in Bergen.

Managers propose raises in February; the people-ops team checks them against the bands
before the leadership team approves the total budget.
""",
        },
    ),
    "sales": (
        ["sales"],
        {
            "discounts.md": """# Discount approvals

Account executives may grant discounts of up to 15 percent on their own. Discounts between
15 and 30 percent need approval from the sales director. Anything above 30 percent must be
approved by the chief financial officer.
""",
        },
    ),
}

DEMO_USERS = """\
# API keys of the demo: each user reads 'public' plus their groups. Replace these keys!
users:
  - name: ada
    key: demo-key-ada-engineering
    groups: [engineering]
  - name: pia
    key: demo-key-pia-people-ops
    groups: [people-ops]
  - name: sol
    key: demo-key-sol-sales
    groups: [sales]
  - name: admin
    key: demo-key-admin
    admin: true
"""


def write_handbook(root: Path) -> dict[str, list[str]]:
    """Write the handbook under `root`; returns {folder: groups} to ingest."""
    plan = {}
    for folder, (groups, files) in HANDBOOK.items():
        for rel, text in files.items():
            path = root / folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        plan[folder] = groups
    return plan
