//! Typed ids in and out of SQL: bound as the text they are stored as, read back parsed (a
//! stored value that is not one is corrupt, never guessed at).

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Any, Database, Decode, Encode, Type};

use crate::domain::{
    CaseId, ConnectorId, DeliveryId, DocumentId, MessageId, NoteId, PartyId, ThreadId, WebhookId,
};

impl Type<Any> for CaseId {
    fn type_info() -> <Any as Database>::TypeInfo {
        <String as Type<Any>>::type_info()
    }
}

impl<'q> Encode<'q, Any> for CaseId {
    fn encode_by_ref(
        &self,
        buf: &mut <Any as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Any>>::encode(self.to_string(), buf)
    }
}

impl<'r> Decode<'r, Any> for CaseId {
    fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<'r, Any>>::decode(value)?;
        CaseId::parse(&text).ok_or_else(|| format!("not a case id: {text:?}").into())
    }
}

/// The prefixed ids: bound as their text; read back as stored (parley wrote them).
macro_rules! stored_text_id {
    ($($name:ident),*) => {$(
        impl Type<Any> for $name {
            fn type_info() -> <Any as Database>::TypeInfo {
                <String as Type<Any>>::type_info()
            }
        }

        impl<'q> Encode<'q, Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <Any as Database>::ArgumentBuffer<'q>,
            ) -> Result<IsNull, BoxDynError> {
                <String as Encode<'q, Any>>::encode(self.as_str().to_string(), buf)
            }
        }

        impl<'r> Decode<'r, Any> for $name {
            fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(Self::from_stored(<String as Decode<'r, Any>>::decode(value)?))
            }
        }
    )*};
}

stored_text_id!(
    MessageId,
    ThreadId,
    DocumentId,
    WebhookId,
    DeliveryId,
    NoteId,
    ConnectorId,
    PartyId
);
