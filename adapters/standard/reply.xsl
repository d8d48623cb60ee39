<?xml version="1.0" encoding="UTF-8"?>
<!-- The canonical result (settlement.soap.canonical) to the standard dialect's replies. Failures never reach
     this mapping: the standard dialect answers them with SOAP faults. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns="urn:settlement:soap:v1">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:param name="code"/>
  <xsl:param name="message_id"/>

  <xsl:template match="/result[@operation='eligibility']">
    <EligibilityResponse>
      <person><xsl:value-of select="person"/></person>
      <inRoster><xsl:value-of select="in_roster"/></inRoster>
      <xsl:if test="scheme != ''"><scheme><xsl:value-of select="scheme"/></scheme></xsl:if>
      <xsl:if test="region != ''"><region><xsl:value-of select="region"/></region></xsl:if>
      <on><xsl:value-of select="on"/></on>
      <categories>
        <xsl:for-each select="categories/item">
          <category>
            <code><xsl:value-of select="code"/></code>
            <name><xsl:value-of select="name"/></name>
            <validFrom><xsl:value-of select="valid_from"/></validFrom>
            <xsl:if test="valid_to != ''"><validTo><xsl:value-of select="valid_to"/></validTo></xsl:if>
          </category>
        </xsl:for-each>
      </categories>
      <yearToDate>
        <year><xsl:value-of select="year_to_date/year"/></year>
        <admissions><xsl:value-of select="year_to_date/admissions"/></admissions>
        <paid>
          <xsl:for-each select="year_to_date/paid/entry">
            <fundAmount><fund><xsl:value-of select="@key"/></fund><amount><xsl:value-of select="."/></amount></fundAmount>
          </xsl:for-each>
        </paid>
      </yearToDate>
    </EligibilityResponse>
  </xsl:template>

  <xsl:template match="/result[@operation='quote']">
    <QuoteResponse>
      <xsl:call-template name="shares"/>
      <quoteId><xsl:value-of select="quote_id"/></quoteId>
      <expiresAt><xsl:value-of select="expires_at"/></expiresAt>
    </QuoteResponse>
  </xsl:template>

  <xsl:template match="/result[@operation='settle']">
    <SettleResponse><xsl:call-template name="settlement"/></SettleResponse>
  </xsl:template>

  <xsl:template match="/result[@operation='get']">
    <GetSettlementResponse><xsl:call-template name="settlement"/></GetSettlementResponse>
  </xsl:template>

  <xsl:template match="/result[@operation='reverse']">
    <ReverseResponse><xsl:call-template name="reversal"/></ReverseResponse>
  </xsl:template>

  <xsl:template match="/result[@operation='cancel']">
    <CancelResponse><xsl:call-template name="reversal"/></CancelResponse>
  </xsl:template>

  <xsl:template name="settlement">
    <xsl:call-template name="shares"/>
    <settlementId><xsl:value-of select="settlement_id"/></settlementId>
    <messageId><xsl:value-of select="transaction_id"/></messageId>
    <status><xsl:value-of select="status"/></status>
    <recordedAt><xsl:value-of select="recorded_at"/></recordedAt>
    <visitId><xsl:value-of select="visit_id"/></visitId>
    <replayed><xsl:value-of select="@replayed"/></replayed>
    <xsl:if test="reversal/reversal_id"><reversalId><xsl:value-of select="reversal/reversal_id"/></reversalId></xsl:if>
    <xsl:if test="corrections/item">
      <corrections>
        <xsl:for-each select="corrections/item">
          <correction>
            <correctionId><xsl:value-of select="correction_id"/></correctionId>
            <fund><xsl:value-of select="fund"/></fund>
            <amount><xsl:value-of select="amount"/></amount>
            <patientPays><xsl:value-of select="patient_pays"/></patientPays>
            <recordedAt><xsl:value-of select="recorded_at"/></recordedAt>
          </correction>
        </xsl:for-each>
      </corrections>
    </xsl:if>
    <xsl:if test="net">
      <net>
        <total><xsl:value-of select="net/total"/></total>
        <paid>
          <xsl:for-each select="net/paid/entry">
            <fundAmount><fund><xsl:value-of select="@key"/></fund><amount><xsl:value-of select="."/></amount></fundAmount>
          </xsl:for-each>
        </paid>
        <patientPays><xsl:value-of select="net/patient_pays"/></patientPays>
      </net>
    </xsl:if>
  </xsl:template>

  <xsl:template name="reversal">
    <messageId><xsl:value-of select="transaction_id"/></messageId>
    <status><xsl:value-of select="status"/></status>
    <recordedAt><xsl:value-of select="recorded_at"/></recordedAt>
    <xsl:if test="original_transaction_id">
      <originalMessageId><xsl:value-of select="original_transaction_id"/></originalMessageId>
    </xsl:if>
    <xsl:if test="reversal_id">
      <reversalId><xsl:value-of select="reversal_id"/></reversalId>
      <settlementId><xsl:value-of select="settlement_id"/></settlementId>
      <total><xsl:value-of select="total"/></total>
      <patientPays><xsl:value-of select="patient_pays"/></patientPays>
      <entries>
        <xsl:for-each select="entries/item">
          <entry><fund><xsl:value-of select="fund"/></fund><amount><xsl:value-of select="paid"/></amount></entry>
        </xsl:for-each>
      </entries>
    </xsl:if>
    <replayed><xsl:value-of select="@replayed"/></replayed>
  </xsl:template>

  <xsl:template name="shares">
    <total><xsl:value-of select="total"/></total>
    <outOfCatalogue><xsl:value-of select="out_of_catalogue"/></outOfCatalogue>
    <overPriceLimit><xsl:value-of select="over_price_limit"/></overPriceLimit>
    <preSelfPay><xsl:value-of select="pre_self_pay"/></preSelfPay>
    <inScope><xsl:value-of select="in_scope"/></inScope>
    <payers>
      <xsl:for-each select="payers/item">
        <payer>
          <layer><xsl:value-of select="layer"/></layer>
          <fund><xsl:value-of select="fund"/></fund>
          <name><xsl:value-of select="name"/></name>
          <eligible><xsl:value-of select="eligible"/></eligible>
          <base><xsl:value-of select="base"/></base>
          <deductible><xsl:value-of select="deductible"/></deductible>
          <paid><xsl:value-of select="paid"/></paid>
          <summary><xsl:value-of select="summary"/></summary>
        </payer>
      </xsl:for-each>
    </payers>
    <patientPays><xsl:value-of select="patient_pays"/></patientPays>
    <categories>
      <xsl:for-each select="categories/item"><category><xsl:value-of select="."/></category></xsl:for-each>
    </categories>
    <tariff>
      <region><xsl:value-of select="tariff/region"/></region>
      <version><xsl:value-of select="tariff/version"/></version>
      <sha256><xsl:value-of select="tariff/sha256"/></sha256>
    </tariff>
    <lines>
      <xsl:for-each select="lines/item">
        <line>
          <id><xsl:value-of select="id"/></id>
          <code><xsl:value-of select="code"/></code>
          <class><xsl:value-of select="class"/></class>
          <amount><xsl:value-of select="amount"/></amount>
          <outOfCatalogue><xsl:value-of select="out_of_catalogue"/></outOfCatalogue>
          <overPriceLimit><xsl:value-of select="over_price_limit"/></overPriceLimit>
          <preSelfPay><xsl:value-of select="pre_self_pay"/></preSelfPay>
          <inScope><xsl:value-of select="in_scope"/></inScope>
          <xsl:if test="share"><share><xsl:value-of select="share"/></share></xsl:if>
          <xsl:if test="price_cap"><priceCap><xsl:value-of select="price_cap"/></priceCap></xsl:if>
        </line>
      </xsl:for-each>
    </lines>
  </xsl:template>
</xsl:stylesheet>
