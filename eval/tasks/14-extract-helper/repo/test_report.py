import datetime
import unittest

from report import format_admin, format_report, format_user


class ReportTest(unittest.TestCase):
    def test_user(self):
        user = {"name": "Ana", "joined": datetime.date(2024, 3, 3)}
        self.assertEqual(format_user(user), "Ana (member since 3 Mar 2024)")

    def test_admin(self):
        admin = {"name": "Bo", "granted": datetime.date(2021, 12, 25), "level": "read"}
        self.assertEqual(format_admin(admin), "Bo [admin, read access since 25 Dec 2021]")

    def test_report(self):
        users = [{"name": "Ana", "joined": datetime.date(2024, 3, 3)}]
        admins = [{"name": "Bo", "granted": datetime.date(2021, 1, 9)}]
        self.assertEqual(
            format_report(users, admins),
            "Bo [admin, full access since 9 Jan 2021]\nAna (member since 3 Mar 2024)",
        )


if __name__ == "__main__":
    unittest.main()
