"""L{ilchat.chat.claims}: who keeps a member for a reason of their own."""

from twisted.trial.unittest import SynchronousTestCase

from ilchat.chat.claims import MemberClaims


class MemberClaimsTests(SynchronousTestCase):

    def test_a_member_is_claimed_until_every_claim_ends(self) -> None:
        claims = MemberClaims()
        claims.add(7, "n1")
        claims.add(7, "n2")
        self.assertTrue(claims.discard(7, "n1"))
        self.assertFalse(claims.discard(7, "n1"))  # only its own claim, once
        self.assertTrue(claims.claimed(7))
        claims.discard(7, "n2")
        self.assertFalse(claims.claimed(7))
        self.assertEqual(claims.holders(7), set())

    def test_replace_says_what_the_instance_no_longer_claims(self) -> None:
        claims = MemberClaims()
        for user_id in (6, 7):
            claims.add(user_id, "n1")
        claims.add(6, "n2")
        self.assertEqual(claims.replace("n1", [7, 8]), [6])
        self.assertEqual(claims.claimed_by("n1"), [7, 8])
        self.assertEqual(claims.holders(6), {"n2"})

    def test_a_departure_ends_the_previous_runs_claims_only(self) -> None:
        """A run started again under the same name keeps what it claimed since."""
        claims = MemberClaims()
        claims.add(7, "n1")
        claims.depart("n1")
        claims.add(8, "n1")  # the new run
        self.assertEqual(claims.holders(7), {"n1~"})
        self.assertEqual(claims.end("n1~"), [7])
        self.assertFalse(claims.claimed(7))
        self.assertEqual(claims.claimed_by("n1"), [8])

    def test_forget(self) -> None:
        claims = MemberClaims()
        claims.add(7, "n1")
        claims.add(7, "n2")
        claims.forget(7)
        self.assertFalse(claims.claimed(7))
